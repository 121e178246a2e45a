#pragma once
// What the scripted debugger tests share: the JSON `state` lines a script printed, a screenshot's
// pixels, and `attnscope view … --script` (the full window) on a private Xvfb.
#include <catch2/catch.hpp>
#include <stb_image.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_support.h"
#ifdef ATTNSCOPE_HAVE_APP
#include "ui/app/private_display.h"
#endif

namespace attn::testing {

// Every line of `out` that is a JSON object (the script's `state` lines, in order).
inline std::vector<nlohmann::json> states_of(const std::string& out) {
    std::vector<nlohmann::json> states;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
        if (!line.empty() && line[0] == '{') states.push_back(nlohmann::json::parse(line));
    return states;
}

// A screenshot's pixels (RGBA). With ATTNSCOPE_KEEP_SCREENSHOTS=DIR the PNG is also copied there.
struct Image {
    int w = 0, h = 0;
    std::vector<unsigned char> rgba;
    explicit Image(const std::string& path) {
        namespace fs = std::filesystem;
        if (const char* dir = std::getenv("ATTNSCOPE_KEEP_SCREENSHOTS"); dir && fs::exists(path))
            fs::copy_file(path, fs::path(dir) / fs::path(path).filename(), fs::copy_options::overwrite_existing);
        int channels = 0;
        unsigned char* p = stbi_load(path.c_str(), &w, &h, &channels, 4);
        REQUIRE(p);
        rgba.assign(p, p + size_t(w) * size_t(h) * 4);
        stbi_image_free(p);
    }
    const unsigned char* at(int x, int y) const { return &rgba[(size_t(y) * size_t(w) + size_t(x)) * 4]; }
    // Fraction of the pixels of rect [x0, y0, x1, y1) that pass `test`.
    template <class Test>
    double fraction(const nlohmann::json& rect, Test test) const {
        const int x0 = std::max(0, int(rect[0].get<double>())), y0 = std::max(0, int(rect[1].get<double>()));
        const int x1 = std::min(w, int(rect[2].get<double>())), y1 = std::min(h, int(rect[3].get<double>()));
        size_t n = 0, hit = 0;
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x, ++n)
                if (test(at(x, y))) ++hit;
        return n ? double(hit) / double(n) : 0.0;
    }
    size_t colours() const {
        std::set<uint32_t> set;
        for (size_t i = 0; i + 3 < rgba.size(); i += 4) set.insert(uint32_t(rgba[i]) << 16 | uint32_t(rgba[i + 1]) << 8 | rgba[i + 2]);
        return set.size();
    }
};

#ifdef ATTNSCOPE_HAVE_APP
// Runs `attnscope view ARGS --script` (the full window, 1600×900) on a private Xvfb; empty (with a
// visible SKIPPED warning) where Xvfb is not installed.
inline std::optional<CliResult> run_window(const std::string& args, const std::string& script_text, const TempDir& dir) {
    const auto xvfb = attn::app::find_in_path("Xvfb");
    if (!xvfb) {
        WARN("SKIPPED: Xvfb is not installed (the scripted debugger runs its panels on a private X server)");
        return std::nullopt;
    }
    attn::app::PrivateDisplay display(*xvfb, 1700, 1000);
    REQUIRE_FALSE(display.display().empty());
    const std::string script = dir.file("script.txt");
    std::ofstream(script) << script_text;
    const std::string old = std::getenv("DISPLAY") ? std::getenv("DISPLAY") : "";
    ::setenv("DISPLAY", display.display().c_str(), 1);
    CliResult r = run_cli("view " + args + " --size 1600x900 --frames 2 --script " + script);
    if (old.empty()) ::unsetenv("DISPLAY");
    else ::setenv("DISPLAY", old.c_str(), 1);
    return r;
}
#endif

}  // namespace attn::testing
