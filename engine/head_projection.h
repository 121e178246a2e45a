#pragma once
// Heads as points in the plane (issue 6, "Heads"): a feature vector per head, projected to 2-D
// by PCA or t-SNE and grouped by k-means, exported as CSV or JSON (layer, head, x, y, cluster,
// labels).
//
// Features, one row per (layer, head), layer-major:
// - fingerprints: the metrics of head_fingerprints.h (entropy, normalised entropy, sink, previous
//   token, induction, local mass, mean distance, keys for 90%, its fraction, positional mass),
//   each standardised over the heads (mean 0, standard deviation 1; a metric every head shares is 0).
// - patterns: the attention map itself, coarsely — the lower triangle of a grid × grid (32 × 32)
//   summary of P: each grid cell is the mass of its (query, key) block divided by the queries of its
//   row of cells, so every grid row is a distribution over key bins. It comes from one CpuTileSource
//   tile covering the whole session, at a level of 7 or more (the pooled overview, cheap at 50k
//   tokens) once the session is longer than 1024 tokens, exact below that. The grid is coarser
//   than 32 when the tile has fewer cells (sessions under 32 tokens, or under 4096 tokens on the
//   overview's 128-token blocks).
//
// Methods (deterministic: the same input, options and seed give the same output, bit for bit):
// - PCA: eigenvectors of the features' covariance (LAPACK dsyevd, from OpenBLAS); x and y are the
//   scores on the first two components. The seed plays no part. Each component's sign is fixed so
//   that its largest-magnitude loading is positive.
// - t-SNE: exact (O(n²) per iteration, fine for a few hundred heads), van der Maaten's recipe:
//   Gaussian affinities with each point's bandwidth found by bisection to match the perplexity
//   (lowered to (n − 1) / 3 when there are too few heads for it), symmetrised; start from
//   N(0, 10⁻⁴) drawn with std::mt19937_64(seed); a fixed number of iterations of gradient descent
//   with momentum 0.5 then 0.8, per-coordinate gains, early exaggeration 12 for the first quarter of
//   the iterations (at most 250; the default is 1000 iterations) and learning rate max(n / 48, 50).
// - k-means on the features (not on x, y: clusters then do not depend on the projection):
//   k-means++ seeding drawn with std::mt19937_64(seed), then Lloyd iterations until no head moves
//   (at most 300). Clusters are numbered in order of their first head, so cluster 0 holds head (0, 0).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/head_fingerprints.h"
#include "engine/session.h"
#include "engine/tile_source.h"

namespace attn {

// Row-major: rows × cols.
struct FeatureMatrix {
    int64_t rows = 0, cols = 0;
    std::vector<double> values;

    double& at(int64_t r, int64_t c) { return values[static_cast<size_t>(r * cols + c)]; }
    double at(int64_t r, int64_t c) const { return values[static_cast<size_t>(r * cols + c)]; }
};

// Names of the fingerprint feature columns, in order.
const std::vector<std::string>& fingerprint_feature_names();
FeatureMatrix fingerprint_features(const std::vector<HeadFingerprint>& fingerprints);
// grid: cells across (at most; see above). threads: as in for_each_parallel, over heads.
FeatureMatrix pattern_features(const CpuTileSource& source, const CaptureStore& store, int grid = 32, int threads = 0);

struct PcaResult {
    std::vector<double> coordinates;  // rows × 2, row-major
    std::vector<double> components;   // 2 × cols: the unit loadings of components 1 and 2
    double explained[2] = {0, 0};     // fraction of the total variance each component holds
};
// Fewer than two columns or rows: the missing components are zero.
PcaResult pca_2d(const FeatureMatrix& features);

struct TsneOptions {
    double perplexity = 30;
    int iterations = 1000;
    uint64_t seed = 1;
};
std::vector<double> tsne_2d(const FeatureMatrix& features, const TsneOptions& options = {});  // rows × 2

struct KmeansResult {
    std::vector<int> cluster;  // per row, 0..k−1 (k clamped to the number of rows)
    int k = 0;
    int iterations = 0;
};
KmeansResult kmeans(const FeatureMatrix& features, int k, uint64_t seed, int max_iterations = 300);

// ---- the whole projection ---------------------------------------------------------------------

enum class ProjectionMethod { Pca, Tsne };
enum class ProjectionFeatures { Fingerprints, Patterns };
const char* projection_method_name(ProjectionMethod method);
const char* projection_features_name(ProjectionFeatures features);
ProjectionMethod parse_projection_method(const std::string& name);      // "pca" | "tsne", else fails
ProjectionFeatures parse_projection_features(const std::string& name);  // "fingerprints" | "patterns"

struct ProjectionOptions {
    ProjectionMethod method = ProjectionMethod::Pca;
    ProjectionFeatures features = ProjectionFeatures::Fingerprints;
    int k = 4;          // clusters (clamped to the number of heads); 0: no clustering (cluster −1)
    uint64_t seed = 1;  // t-SNE start and k-means++ seeding
    double perplexity = 30;
    int tsne_iterations = 1000;
    int grid = 32;
    int threads = 0;
};

struct HeadPoint {
    int layer = 0, head = 0;
    double x = 0, y = 0;
    int cluster = -1;
    std::vector<std::string> labels;  // automatic, then the user's
};

struct HeadProjection {
    ProjectionOptions options;
    int64_t feature_count = 0;    // columns of the feature matrix
    double explained[2] = {0, 0};  // PCA only
    std::vector<HeadPoint> points;  // layer-major
};

// fingerprints: HeadFingerprints::all() of the same session (for the fingerprint features and the labels).
HeadProjection project_heads(const CpuTileSource& source, const Session& session,
                             const std::vector<HeadFingerprint>& fingerprints, const ProjectionOptions& options);

// CSV: a header line "layer,head,x,y,cluster,labels", labels joined by ';' (quoted when needed).
std::string projection_csv(const HeadProjection& projection);
std::string projection_json(const HeadProjection& projection);  // {"method", …, "points": [...]}
// Writes CSV or JSON by the file's extension (.csv or .json, else fails), atomically.
void write_projection(const std::string& path, const HeadProjection& projection);

}  // namespace attn
