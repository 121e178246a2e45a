#pragma once
// Tiles as files: NumPy .npy (raw float32 values) and PNG (log-scaled, colour-mapped).
#include <string>
#include <vector>

namespace attn::cli {

// Writes a row-major float32 array of the given shape as a NumPy .npy (format 1.0) file, atomically.
void write_npy(const std::string& path, const std::vector<float>& values, size_t rows, size_t cols);
// Colour-maps values on a log10 scale between [floor, max] and writes an RGB PNG, atomically.
// Cells outside valid_rows × valid_cols (past the end of the sequence) are drawn dark grey.
void write_heatmap_png(const std::string& path, const std::vector<float>& values, int rows, int cols,
                       int valid_rows, int valid_cols, float log_floor = -6.0f);
// The same colour map for cells [row0, row1) × [col0, col1) of a rows × cols array, each cell drawn as
// scale × scale pixels (snapshots of a region, e.g. in audit reports); the log scale spans the crop.
void write_heatmap_png_crop(const std::string& path, const std::vector<float>& values, int rows, int cols, int row0,
                            int row1, int col0, int col1, int valid_rows, int valid_cols, int scale,
                            float log_floor = -6.0f);

}  // namespace attn::cli
