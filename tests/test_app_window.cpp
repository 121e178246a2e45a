// The windowed debugger (issue 4's application shell), run for real under a private Xvfb: GLFW
// window, Vulkan swapchain on lavapipe with the validation layer, ImGui with its panels, the map
// blitted in, a screenshot of the swapchain image. Skipped with a visible WARN where Xvfb is not
// installed; the no-display path is checked everywhere.
#ifdef ATTNSCOPE_HAVE_APP
#include <GLFW/glfw3.h>
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stb_image.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "test_support.h"
#include "ui/app/private_display.h"
#include "ui/app/windowed_view.h"

extern char** environ;

namespace {

using attn::app::find_in_path;

// An Xvfb on a free display number, killed with the object.
class PrivateXvfb : public attn::app::PrivateDisplay {
public:
    explicit PrivateXvfb(const std::string& xvfb) : PrivateDisplay(xvfb, 1280, 800) {}
};

// Sets (or unsets) an environment variable for the scope.
class EnvOverride {
public:
    EnvOverride(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        if (value) ::setenv(name, value, 1);
        else ::unsetenv(name);
    }
    ~EnvOverride() {
        if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
        else ::unsetenv(name_.c_str());
    }

private:
    std::string name_;
    std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("windowed view without a display fails cleanly and suggests --headless", "[app]") {
    EnvOverride display("DISPLAY", nullptr), wayland("WAYLAND_DISPLAY", nullptr);
    attn::app::WindowedViewOptions options;
    options.synthetic_tokens = 256;
    options.frames = 1;
    REQUIRE(attn::app::run_windowed_view(options) == 2);
}

TEST_CASE("windowed view under Xvfb: swapchain screenshot shows the map and the UI, no validation errors", "[app]") {
    const std::optional<std::string> xvfb = find_in_path("Xvfb");
    if (!xvfb) {
        WARN("Xvfb is not installed (Debian: xvfb): the windowed [app] test is skipped");
        return;
    }
    PrivateXvfb server(*xvfb);
    REQUIRE_FALSE(server.display().empty());
    EnvOverride display("DISPLAY", server.display().c_str()), wayland("WAYLAND_DISPLAY", nullptr);

    attn::testing::TempDir dir("app_window");
    const std::string shot = dir.file("window.png");
    const std::string script = dir.file("script.txt");
    {
        // Zoom in, hover a cell (the tooltip is drawn), then back out to the whole matrix.
        std::FILE* f = std::fopen(script.c_str(), "w");
        REQUIRE(f);
        std::fputs("show 0 0 64 64\nwait 2\nhover 300 300\nwait 2\nlayer 0\nhead 1\nfit\nwait 2\n", f);
        std::fclose(f);
    }
    attn::app::WindowedViewReport report;
    attn::app::WindowedViewOptions options;
    options.synthetic_tokens = 1024;
    options.size = "1024x640";
    options.frames = 4;
    options.select_query = 700;
    options.script_path = script;
    options.screenshot = shot;
    options.validation = true;
    options.report = &report;
    // Resize the window mid-run: the swapchain must be recreated (the screenshot has the new size).
    options.frame_hook = [](void* window, uint64_t frame) {
        if (frame == 3) glfwSetWindowSize(static_cast<GLFWwindow*>(window), 900, 560);
    };
    const int rc = attn::app::run_windowed_view(options);
    for (const std::string& e : report.validation_errors) UNSCOPED_INFO("validation error: " << e);
    REQUIRE(rc == 0);
    CHECK(report.validation);  // vulkan-validationlayers is a build dependency of the UI
    CHECK(report.validation_errors.empty());
    CHECK(report.frames >= 4);
    REQUIRE(report.screenshot == shot);

    int w = 0, h = 0, channels = 0;
    stbi_uc* pixels = stbi_load(shot.c_str(), &w, &h, &channels, 4);
    REQUIRE(pixels);
    std::set<uint32_t> colours;
    size_t bright = 0;
    for (int i = 0; i < w * h; ++i) {
        const stbi_uc* p = pixels + size_t(i) * 4;
        colours.insert(uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
        if (p[0] > 180 && p[1] > 180 && p[2] < 120) ++bright;  // the top of viridis: the sink column of head 1
    }
    stbi_image_free(pixels);
    INFO("screenshot " << w << "x" << h << ", " << colours.size() << " colours, " << bright << " bright map pixels");
    CHECK(w == 900);  // after the resize (no window manager under Xvfb: the size is honoured as asked)
    CHECK(h == 560);
    CHECK(colours.size() > 64);  // not blank: map colours, text anti-aliasing, panel backgrounds
    CHECK(bright > 100);         // the map itself made it into the swapchain image
}

TEST_CASE("windowed view: a content scale change at run time rebuilds fonts and style, no validation errors", "[app]") {
    const std::optional<std::string> xvfb = find_in_path("Xvfb");
    if (!xvfb) {
        WARN("Xvfb is not installed (Debian: xvfb): the windowed [app] test is skipped");
        return;
    }
    PrivateXvfb server(*xvfb);
    REQUIRE_FALSE(server.display().empty());
    EnvOverride display("DISPLAY", server.display().c_str()), wayland("WAYLAND_DISPLAY", nullptr);

    attn::testing::TempDir dir("app_dpi");
    const std::string script = dir.file("script.txt");
    {
        // As if the window moved to a 2x monitor, then to a 1.5x one (Xvfb's own scale never changes).
        std::FILE* f = std::fopen(script.c_str(), "w");
        REQUIRE(f);
        std::fputs("wait 2\ndpi 2\nwait 2\nhover 200 200\nwait 2\ndpi 1.5\nwait 2\n", f);
        std::fclose(f);
    }
    attn::app::WindowedViewReport report;
    attn::app::WindowedViewOptions options;
    options.synthetic_tokens = 512;
    options.size = "800x500";
    options.frames = 3;
    options.script_path = script;
    options.screenshot = dir.file("scaled.png");
    options.validation = true;
    options.report = &report;
    const int rc = attn::app::run_windowed_view(options);
    for (const std::string& e : report.validation_errors) UNSCOPED_INFO("validation error: " << e);
    REQUIRE(rc == 0);
    CHECK(report.validation_errors.empty());
    CHECK(report.content_scale_changes == 2);
    CHECK(report.content_scale == Approx(1.5f));
    CHECK(report.font_px == Approx(std::round(15.f * 1.5f)));  // AppWindowOptions::base_font_px × scale
    CHECK(std::filesystem::exists(report.screenshot));
}
#endif


#ifdef ATTNSCOPE_HAVE_APP
TEST_CASE("windowed view: redrawing only what changed gives the same pixels as redrawing everything", "[app][damage]") {
    const std::optional<std::string> xvfb = find_in_path("Xvfb");
    if (!xvfb) {
        WARN("Xvfb is not installed (Debian: xvfb): the windowed [app] test is skipped");
        return;
    }
    PrivateXvfb server(*xvfb);
    REQUIRE_FALSE(server.display().empty());
    EnvOverride display("DISPLAY", server.display().c_str()), wayland("WAYLAND_DISPLAY", nullptr);

    attn::testing::TempDir dir("app_damage");
    const std::string script = dir.file("script.txt");
    {
        // Zoom, hover (a tooltip comes and goes), another head, pan, a colormap: most frames change
        // part of the window; some change nothing.
        std::FILE* f = std::fopen(script.c_str(), "w");
        REQUIRE(f);
        std::fputs("show 0 0 64 64\nwait 3\nhover 300 300\nwait 2\nhover 310 240\nwait 2\nhead 1\nwait 2\npan 40 -20\n"
                   "wait 2\ncolormap magma\nwait 2\nfit\nwait 3\nhead 0\nwait 3\n",
                   f);
        std::fclose(f);
    }
    const auto run = [&](bool full_redraw, const std::string& shot, attn::app::WindowedViewReport& report) {
        attn::app::WindowedViewOptions options;
        options.synthetic_tokens = 1024;
        options.size = "900x560";
        options.frames = 4;
        options.select_query = 700;
        options.script_path = script;
        options.screenshot = shot;
        options.validation = true;
        options.full_redraw = full_redraw;
        options.report = &report;
        return attn::app::run_windowed_view(options);
    };
    attn::app::WindowedViewReport partial, whole;
    const std::string partial_png = dir.file("partial.png"), whole_png = dir.file("whole.png");
    REQUIRE(run(false, partial_png, partial) == 0);
    REQUIRE(run(true, whole_png, whole) == 0);
    CHECK(partial.validation_errors.empty());

    // Partial redraws happened (some frames drew only a part, some nothing), and every full-redraw frame was whole.
    size_t skipped = 0, part = 0;
    for (size_t i = 0; i < partial.frame_drawn.size(); ++i) {
        if (!partial.frame_drawn[i]) ++skipped;
        else if (partial.damaged_fraction[i] < 0.99) ++part;
    }
    INFO(partial.frame_drawn.size() << " frames: " << skipped << " not drawn, " << part << " drawn in part");
    CHECK(part > 0);
    for (double f : whole.damaged_fraction) CHECK(f == Approx(1.0));

    int w1 = 0, h1 = 0, w2 = 0, h2 = 0, c = 0;
    stbi_uc* a = stbi_load(partial_png.c_str(), &w1, &h1, &c, 4);
    stbi_uc* b = stbi_load(whole_png.c_str(), &w2, &h2, &c, 4);
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(w1 == w2);
    REQUIRE(h1 == h2);
    size_t different = 0;
    for (size_t i = 0; i < size_t(w1) * h1 * 4; ++i) different += a[i] != b[i];
    stbi_image_free(a);
    stbi_image_free(b);
    CHECK(different == 0);
}
#endif
