#include "ui/cli/tile_image.h"

#include <stb_image_write.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "engine/atomic_file.h"
#include "engine/error.h"

namespace attn::cli {

void write_npy(const std::string& path, const std::vector<float>& values, size_t rows, size_t cols) {
    if (values.size() != rows * cols) fail("write_npy: ", values.size(), " values for shape ", rows, "×", cols);
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                         std::to_string(cols) + "), }";
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in '\n'.
    const size_t unpadded = 10 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    std::string file("\x93NUMPY\x01\x00", 8);
    file += static_cast<char>(header.size() & 0xff);
    file += static_cast<char>(header.size() >> 8);
    file += header;
    static_assert(std::endian::native == std::endian::little, "npy writer assumes a little-endian host");
    file.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    write_file_atomically(path, file);
}

namespace {
// A dark-to-bright ramp (black → indigo → crimson → orange → pale yellow) chosen for attention:
// small masses stay dark, peaks stand out. Control points in sRGB, linearly interpolated.
std::array<unsigned char, 3> ramp(float t) {
    static constexpr float kStops[][3] = {
        {0.00f, 0.00f, 0.02f}, {0.23f, 0.06f, 0.43f}, {0.65f, 0.13f, 0.38f}, {0.95f, 0.45f, 0.13f}, {0.99f, 0.95f, 0.70f}};
    constexpr int kSegments = 4;
    t = std::clamp(t, 0.0f, 1.0f) * kSegments;
    const int s = std::min(static_cast<int>(t), kSegments - 1);
    const float f = t - static_cast<float>(s);
    std::array<unsigned char, 3> rgb{};
    for (int c = 0; c < 3; ++c)
        rgb[c] = static_cast<unsigned char>(std::lround(255.0f * (kStops[s][c] * (1 - f) + kStops[s + 1][c] * f)));
    return rgb;
}
}  // namespace

namespace {
// Renders cells [0, out_rows/scale) × [0, out_cols/scale) of `values` (row stride `cols`).
void render_png(const std::string& path, const std::vector<float>& values, int cols, int out_rows, int out_cols,
                int scale, int valid_rows, int valid_cols, float log_floor) {
    float peak = 0.f;
    for (float v : values) peak = std::max(peak, v);
    const float top = peak > 0 ? std::log10(peak) : 0.f;
    const float bottom = std::min(log_floor, top - 1e-3f);
    std::vector<unsigned char> pixels(static_cast<size_t>(out_rows) * out_cols * 3);
    for (int y = 0; y < out_rows; ++y)
        for (int x = 0; x < out_cols; ++x) {
            const int r = y / scale, c = x / scale;
            unsigned char* px = &pixels[(static_cast<size_t>(y) * out_cols + x) * 3];
            if (r >= valid_rows || c >= valid_cols) {
                px[0] = px[1] = px[2] = 40;
                continue;
            }
            const float v = values[static_cast<size_t>(r) * cols + c];
            const float t = v > 0 ? (std::log10(v) - bottom) / (top - bottom) : 0.f;
            const auto rgb = ramp(t);
            std::memcpy(px, rgb.data(), 3);
        }
    std::string png;
    const int ok = stbi_write_png_to_func(
        [](void* context, void* data, int size) {
            static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
        },
        &png, out_cols, out_rows, 3, pixels.data(), out_cols * 3);
    if (!ok) fail(path, ": PNG encoding failed");
    write_file_atomically(path, png);
}
}  // namespace

void write_heatmap_png(const std::string& path, const std::vector<float>& values, int rows, int cols,
                       int valid_rows, int valid_cols, float log_floor) {
    render_png(path, values, cols, rows, cols, 1, valid_rows, valid_cols, log_floor);
}

void write_heatmap_png_crop(const std::string& path, const std::vector<float>& values, int rows, int cols, int row0,
                            int row1, int col0, int col1, int valid_rows, int valid_cols, int scale, float log_floor) {
    if (values.size() != static_cast<size_t>(rows) * static_cast<size_t>(cols))
        fail(path, ": ", values.size(), " values for a ", rows, "×", cols, " heat map");
    if (row0 < 0 || col0 < 0 || row1 > rows || col1 > cols || row0 >= row1 || col0 >= col1)
        fail(path, ": the crop ", row0, "..", row1, " × ", col0, "..", col1, " is outside the ", rows, "×", cols, " map");
    if (scale < 1 || scale > 256) fail(path, ": ", scale, " pixels per cell is out of range (1-256)");
    const int crop_rows = row1 - row0, crop_cols = col1 - col0;
    std::vector<float> crop(static_cast<size_t>(crop_rows) * crop_cols);
    for (int r = 0; r < crop_rows; ++r)
        std::copy_n(values.begin() + static_cast<ptrdiff_t>(row0 + r) * cols + col0, crop_cols,
                    crop.begin() + static_cast<ptrdiff_t>(r) * crop_cols);
    render_png(path, crop, crop_cols, crop_rows * scale, crop_cols * scale, scale, std::max(0, valid_rows - row0),
               std::max(0, valid_cols - col0), log_floor);
}


}  // namespace attn::cli
