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
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <memory>
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

// A private Xvfb that DISPLAY points at for the scope (WAYLAND_DISPLAY unset).
struct PrivateDisplayScope {
    PrivateXvfb server;
    EnvOverride display, wayland;
    explicit PrivateDisplayScope(const std::string& xvfb)
        : server(xvfb), display("DISPLAY", server.display().c_str()), wayland("WAYLAND_DISPLAY", nullptr) {}
};

// Null, with a visible WARN, where Xvfb is not installed: the windowed test is skipped.
std::unique_ptr<PrivateDisplayScope> private_display_or_skip() {
    const std::optional<std::string> xvfb = find_in_path("Xvfb");
    if (!xvfb) {
        WARN("Xvfb is not installed (Debian: xvfb): the windowed [app] test is skipped");
        return nullptr;
    }
    auto scope = std::make_unique<PrivateDisplayScope>(*xvfb);
    REQUIRE_FALSE(scope->server.display().empty());
    return scope;
}

}  // namespace

TEST_CASE("windowed view without a display fails cleanly and suggests --headless", "[app]") {
    EnvOverride display("DISPLAY", nullptr), wayland("WAYLAND_DISPLAY", nullptr);
    attn::app::WindowedViewOptions options;
    options.synthetic_tokens = 256;
    options.frames = 1;
    REQUIRE(attn::app::run_windowed_view(options) == 2);
}

TEST_CASE("windowed view under Xvfb: swapchain screenshot shows the map and the UI, no validation errors", "[app]") {
    // Through the Vulkan swapchain (on lavapipe the default is X11 shared memory: tested below).
    const auto x_server = private_display_or_skip();
    if (!x_server) return;

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
    options.present = "swapchain";
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
    CHECK(report.present == "swapchain");
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
    const auto x_server = private_display_or_skip();
    if (!x_server) return;

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
    const auto x_server = private_display_or_skip();
    if (!x_server) return;

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
    for (size_t i = 0; i < whole.frame_drawn.size(); ++i)
        if (whole.frame_drawn[i]) CHECK(whole.damaged_fraction[i] == Approx(1.0));

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

#if defined(ATTNSCOPE_HAVE_APP) && defined(ATTNSCOPE_HAVE_XCB_SHM)
#include <dlfcn.h>
#include <imgui.h>
#include <xcb/xcb.h>

#include "ui/app/app_window.h"

namespace {

// What the X server shows in the window, as RGBA: GetImage on a connection of our own (the window
// id from GLFW, looked up as the presenter does).
std::vector<uint8_t> window_pixels(GLFWwindow* window, int w, int h) {
    using GetX11Window = unsigned long (*)(GLFWwindow*);
    auto get = reinterpret_cast<GetX11Window>(dlsym(RTLD_DEFAULT, "glfwGetX11Window"));
    REQUIRE(get);
    xcb_connection_t* connection = xcb_connect(nullptr, nullptr);
    REQUIRE(xcb_connection_has_error(connection) == 0);
    const auto id = static_cast<xcb_drawable_t>(get(window));
    xcb_get_image_reply_t* reply = xcb_get_image_reply(
        connection,
        xcb_get_image(connection, XCB_IMAGE_FORMAT_Z_PIXMAP, id, 0, 0, static_cast<uint16_t>(w), static_cast<uint16_t>(h), ~0u),
        nullptr);
    REQUIRE(reply);
    const uint8_t* bgrx = xcb_get_image_data(reply);
    REQUIRE(xcb_get_image_data_length(reply) == w * h * 4);
    std::vector<uint8_t> rgba(size_t(w) * size_t(h) * 4);
    for (size_t i = 0; i < rgba.size(); i += 4) {
        rgba[i] = bgrx[i + 2];
        rgba[i + 1] = bgrx[i + 1];
        rgba[i + 2] = bgrx[i];
        rgba[i + 3] = 255;
    }
    free(reply);
    xcb_disconnect(connection);
    return rgba;
}

}  // namespace

TEST_CASE("windowed view: X11 shared-memory presentation puts exactly the drawn pixels in the window", "[app][damage]") {
    const auto x_server = private_display_or_skip();
    if (!x_server) return;
    attn::testing::TempDir dir("app_shm");

    attn::app::GlfwScope glfw;
    attn::app::AppWindowOptions options;
    options.width = 640, options.height = 400;
    options.validation = true;
    options.present = attn::app::PresentPath::SharedMemory;
    attn::app::AppWindow window(options);
    REQUIRE(window.presents_through_shared_memory());
    CHECK(window.present_note() == "x11-shm");

    // Frames that change part of the window (a moving panel, a text, a coloured block that comes
    // and goes), a resize in the middle (new segments, the whole window sent again), a screenshot last.
    int drawn = 0;
    const auto frame = [&](int i, const std::string& shot) {
        REQUIRE(window.begin_frame());
        ImGui::SetNextWindowPos(ImVec2(20.f + 9.f * float(i), 30.f));
        ImGui::SetNextWindowSize(ImVec2(260, 160));
        ImGui::Begin("probe");
        ImGui::Text("frame %d", i);
        ImGui::Button(i % 2 ? "odd" : "even");
        ImGui::End();
        if (i % 3 == 0)
            ImGui::GetBackgroundDrawList()->AddRectFilled(ImVec2(400, 250), ImVec2(470, 330), IM_COL32(230, 40, 90, 255));
        REQUIRE(window.end_frame({}, {}, shot));
        drawn += window.last_timing().drawn ? 1 : 0;
    };
    for (int i = 0; i < 6; ++i) frame(i, {});
    glfwSetWindowSize(window.window(), 560, 360);
    for (int i = 6; i < 10; ++i) frame(i, {});
    const std::string shot = dir.file("shm.png");
    frame(10, shot);
    window.wait_presented();
    CHECK(drawn >= 3);
    CHECK(window.extent().width == 560);
    CHECK(window.extent().height == 360);

    int w = 0, h = 0, channels = 0;
    stbi_uc* expected = stbi_load(shot.c_str(), &w, &h, &channels, 4);
    REQUIRE(expected);
    REQUIRE(w == 560);
    REQUIRE(h == 360);
    const std::vector<uint8_t> shown = window_pixels(window.window(), w, h);
    size_t different = 0, red = 0;
    for (size_t i = 0; i < shown.size(); i += 4) {
        different += std::memcmp(&shown[i], expected + i, 4) != 0;
        red += shown[i] > 200 && shown[i + 1] < 80;
    }
    stbi_image_free(expected);
    INFO(different << " of " << w * h << " pixels differ between the window and the screenshot");
    CHECK(different == 0);
    CHECK(red == 0);  // frame 10 has no block: its removal reached the window too
    for (const std::string& e : window.context().validation_errors()) UNSCOPED_INFO("validation error: " << e);
    CHECK(window.context().validation_errors().empty());
}
#endif
