#pragma once
// Head clustering (issue 6, "Clustering"): every head as a point — PCA or t-SNE (seeded, so the
// same picture every time) of its fingerprint or of its attention pattern (engine/head_projection.h)
// — coloured by k-means group. Hover names the head and its labels; click opens it in the map.
// Export the projection as CSV or JSON. Computed on a worker (t-SNE of 270 heads takes a moment).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/head_projection.h"
#include "ui/panels/async_value.h"
#include "ui/panels/fingerprints_panel.h"

namespace attn::panels {

struct ClustersState {
    ProjectionOptions options;  // method, features, k, seed, perplexity, iterations
    struct Key {
        const CaptureStore* store = nullptr;
        int64_t positions = 0;
        uint64_t fingerprints = 0;  // FingerprintsState::version
        size_t user_labels = 0;
        int method = 0, features = 0, k = 0;
        uint64_t seed = 0;
        double perplexity = 0;
        int iterations = 0;
        bool operator==(const Key&) const = default;
    };
    AsyncValue<Key, HeadProjection> job;
    int hovered = -1;  // point index
    char export_base[512] = "attnscope-heads";
    std::string export_note;
    // Where points were drawn this frame (framebuffer pixels: x, y), for tests.
    std::vector<std::array<float, 2>> drawn;
};

void update_clusters(const app::DebuggerModel& model, ClustersState& state, const FingerprintsState& fingerprints,
                     const std::vector<HeadLabel>& labels, bool wait = false);
bool clusters_settled(const app::DebuggerModel& model, const ClustersState& state, const FingerprintsState& fingerprints,
                      const std::vector<HeadLabel>& labels);
// Returns the head clicked (layer, head), if any.
std::optional<std::pair<int, int>> draw_clusters_panel(app::DebuggerModel& model, ClustersState& state,
                                                       const FingerprintsState& fingerprints, const std::vector<HeadLabel>& labels);
// Writes the projection (blocking until it is there): .csv or .json.
void export_clusters(const app::DebuggerModel& model, ClustersState& state, const FingerprintsState& fingerprints,
                     const std::vector<HeadLabel>& labels, const std::string& path);
nlohmann::json clusters_json(const app::DebuggerModel& model, const ClustersState& state, const FingerprintsState& fingerprints,
                             const std::vector<HeadLabel>& labels);

}  // namespace attn::panels
