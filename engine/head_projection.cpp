#include "engine/head_projection.h"

#include <cblas.h>  // blasint: the integer type OpenBLAS's LAPACK was built with

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string_view>

#include "engine/atomic_file.h"
#include "engine/attention_metrics.h"
#include "engine/error.h"

// LAPACK's symmetric eigensolver (divide and conquer), as OpenBLAS exports it. There is no
// lapacke.h on Debian's OpenBLAS, so the Fortran entry point is declared here (trailing hidden
// lengths of the two character arguments, as gfortran passes them).
extern "C" void dsyevd_(const char* jobz, const char* uplo, const blasint* n, double* a, const blasint* lda, double* w,
                        double* work, const blasint* lwork, blasint* iwork, const blasint* liwork, blasint* info,
                        size_t jobz_length, size_t uplo_length);

namespace attn {

namespace {

using json = nlohmann::json;

double squared_distance(const FeatureMatrix& m, int64_t a, const double* b) {
    double d = 0;
    for (int64_t c = 0; c < m.cols; ++c) {
        const double diff = m.at(a, c) - b[c];
        d += diff * diff;
    }
    return d;
}

// Symmetric eigen-decomposition of the n × n matrix `a` (either triangle; overwritten by the
// eigenvectors, column j for eigenvalue j). Eigenvalues ascending.
std::vector<double> symmetric_eigen(std::vector<double>& a, int64_t n) {
    if (n > std::numeric_limits<blasint>::max() / 8) fail("PCA: ", n, " features are too many for LAPACK");
    const blasint size = static_cast<blasint>(n);
    std::vector<double> eigenvalues(static_cast<size_t>(n));
    blasint info = 0, lwork = -1, liwork = -1, iwork_query = 0;
    double work_query = 0;
    dsyevd_("V", "U", &size, a.data(), &size, eigenvalues.data(), &work_query, &lwork, &iwork_query, &liwork, &info, 1, 1);
    if (info != 0) fail("PCA: LAPACK dsyevd workspace query failed (info ", info, ")");
    lwork = static_cast<blasint>(work_query);
    liwork = iwork_query;
    std::vector<double> work(static_cast<size_t>(std::max<blasint>(lwork, 1)));
    std::vector<blasint> iwork(static_cast<size_t>(std::max<blasint>(liwork, 1)));
    dsyevd_("V", "U", &size, a.data(), &size, eigenvalues.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
    if (info != 0) fail("PCA: LAPACK dsyevd did not converge (info ", info, ")");
    return eigenvalues;
}

std::string csv_field(const std::string& text) {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    std::string out = "\"";
    for (char c : text) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

std::string number_text(double value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.9g", value);
    return buffer;
}

}  // namespace

// ---- features -----------------------------------------------------------------------------------

const std::vector<std::string>& fingerprint_feature_names() {
    static const std::vector<std::string> names{
        "entropy_bits", "normalized_entropy", "sink_mass",   "previous_token",       "induction",
        "local_mass",   "mean_distance",      "keys_for_90", "keys_for_90_fraction", "positional_mass"};
    return names;
}

FeatureMatrix fingerprint_features(const std::vector<HeadFingerprint>& fingerprints) {
    FeatureMatrix m;
    m.rows = static_cast<int64_t>(fingerprints.size());
    m.cols = static_cast<int64_t>(fingerprint_feature_names().size());
    m.values.reserve(static_cast<size_t>(m.rows * m.cols));
    for (const HeadFingerprint& f : fingerprints)
        for (double v : {f.entropy_bits, f.normalized_entropy, f.sink_mass, f.previous_token, f.induction, f.local_mass,
                         f.mean_distance, f.keys_for_90, f.keys_for_90_fraction, f.positional_mass})
            m.values.push_back(v);
    // Standardised: metrics in bits, tokens and fractions then weigh the same.
    for (int64_t c = 0; c < m.cols; ++c) {
        double mean = 0, variance = 0;
        for (int64_t r = 0; r < m.rows; ++r) mean += m.at(r, c);
        mean /= std::max<double>(1, static_cast<double>(m.rows));
        for (int64_t r = 0; r < m.rows; ++r) variance += (m.at(r, c) - mean) * (m.at(r, c) - mean);
        const double deviation = std::sqrt(variance / std::max<double>(1, static_cast<double>(m.rows)));
        for (int64_t r = 0; r < m.rows; ++r) m.at(r, c) = deviation > 1e-12 ? (m.at(r, c) - mean) / deviation : 0.0;
    }
    return m;
}

FeatureMatrix pattern_features(const CpuTileSource& source, const CaptureStore& store, int grid, int threads) {
    if (grid < 1) fail("the pattern grid must be at least 1 cell across (got ", grid, ")");
    const int64_t n = store.positions();
    if (n == 0) fail("the session holds no positions");
    const CaptureShape& shape = store.shape();
    // One tile covering every position; from the overview (level >= 7) unless the session is short
    // enough that computing all of P exactly is cheap.
    constexpr int64_t kLongestExact = 1024;
    int level = 0;
    while ((int64_t(Tile::kEdge) << level) < n) ++level;
    if (n > kLongestExact) level = std::max(level, CpuTileSource::kFirstOverviewLevel);
    const int64_t cell = int64_t(1) << level;
    const int64_t cells = (n + cell - 1) / cell;
    const int64_t bins = std::min<int64_t>(grid, cells);
    auto bin_of = [&](int64_t c) { return c * bins / cells; };

    FeatureMatrix m;
    m.rows = int64_t(shape.n_layer) * shape.n_head;
    m.cols = bins * (bins + 1) / 2;
    m.values.assign(static_cast<size_t>(m.rows * m.cols), 0.0);
    for_each_parallel(m.rows, threads, [&](int64_t index) {
        TileRequest request;
        request.layer = static_cast<int>(index / shape.n_head);
        request.head = static_cast<int>(index % shape.n_head);
        request.level = level;
        const Tile tile = source.tile(request, /*inline_work=*/true);
        std::vector<double> mass(static_cast<size_t>(bins * bins), 0.0);
        for (int64_t r = 0; r < cells; ++r)
            for (int64_t c = 0; c <= r; ++c)
                mass[static_cast<size_t>(bin_of(r) * bins + bin_of(c))] += tile.sum[static_cast<size_t>(r * Tile::kEdge + c)];
        // Each row of bins as a distribution over key bins (its mass is the number of its queries).
        int64_t column = 0;
        for (int64_t br = 0; br < bins; ++br) {
            double total = 0;
            for (int64_t bc = 0; bc <= br; ++bc) total += mass[static_cast<size_t>(br * bins + bc)];
            for (int64_t bc = 0; bc <= br; ++bc, ++column)
                m.at(index, column) = total > 0 ? mass[static_cast<size_t>(br * bins + bc)] / total : 0.0;
        }
    });
    return m;
}

// ---- PCA ----------------------------------------------------------------------------------------

PcaResult pca_2d(const FeatureMatrix& features) {
    const int64_t n = features.rows, d = features.cols;
    PcaResult result;
    result.coordinates.assign(static_cast<size_t>(n * 2), 0.0);
    result.components.assign(static_cast<size_t>(2 * d), 0.0);
    if (n < 2 || d < 1) return result;
    std::vector<double> mean(static_cast<size_t>(d), 0.0);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < d; ++c) mean[static_cast<size_t>(c)] += features.at(r, c);
    for (double& v : mean) v /= static_cast<double>(n);
    std::vector<double> centered(static_cast<size_t>(n * d));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < d; ++c) centered[static_cast<size_t>(r * d + c)] = features.at(r, c) - mean[static_cast<size_t>(c)];
    // Covariance (d × d, symmetric: row-major equals column-major).
    std::vector<double> covariance(static_cast<size_t>(d * d), 0.0);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<blasint>(d), static_cast<blasint>(n),
                1.0 / static_cast<double>(n - 1), centered.data(), static_cast<blasint>(d), 0.0, covariance.data(),
                static_cast<blasint>(d));
    for (int64_t i = 0; i < d; ++i)  // mirror the upper triangle (row-major) into the lower one
        for (int64_t j = 0; j < i; ++j) covariance[static_cast<size_t>(i * d + j)] = covariance[static_cast<size_t>(j * d + i)];
    const std::vector<double> eigenvalues = symmetric_eigen(covariance, d);  // columns = eigenvectors
    double total = 0;
    for (double v : eigenvalues) total += std::max(v, 0.0);
    for (int component = 0; component < std::min<int64_t>(2, d); ++component) {
        const int64_t column = d - 1 - component;  // largest eigenvalues last
        const double* vector = covariance.data() + column * d;
        // Fix the sign: largest-magnitude loading positive (the first one on ties).
        int64_t largest = 0;
        for (int64_t c = 1; c < d; ++c)
            if (std::fabs(vector[c]) > std::fabs(vector[largest])) largest = c;
        const double sign = vector[largest] < 0 ? -1.0 : 1.0;
        for (int64_t c = 0; c < d; ++c) result.components[static_cast<size_t>(component * d + c)] = sign * vector[c];
        result.explained[component] = total > 0 ? std::max(eigenvalues[static_cast<size_t>(column)], 0.0) / total : 0.0;
        for (int64_t r = 0; r < n; ++r) {
            double score = 0;
            for (int64_t c = 0; c < d; ++c)
                score += centered[static_cast<size_t>(r * d + c)] * result.components[static_cast<size_t>(component * d + c)];
            result.coordinates[static_cast<size_t>(r * 2 + component)] = score;
        }
    }
    return result;
}

// ---- t-SNE --------------------------------------------------------------------------------------

std::vector<double> tsne_2d(const FeatureMatrix& features, const TsneOptions& options) {
    if (!(options.perplexity > 0)) fail("t-SNE perplexity must be positive (got ", options.perplexity, ")");
    if (options.iterations < 1) fail("t-SNE needs at least one iteration (got ", options.iterations, ")");
    const int64_t n = features.rows;
    std::vector<double> y(static_cast<size_t>(n * 2), 0.0);
    if (n < 2) return y;
    auto at = [n](std::vector<double>& v, int64_t i, int64_t j) -> double& { return v[static_cast<size_t>(i * n + j)]; };

    std::vector<double> distance(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j) {
            double d = 0;
            for (int64_t c = 0; c < features.cols; ++c) {
                const double diff = features.at(i, c) - features.at(j, c);
                d += diff * diff;
            }
            at(distance, i, j) = at(distance, j, i) = d;
        }

    // Conditional affinities p(j|i) with each point's precision β_i bisected until the entropy of
    // p(·|i) is log(perplexity). Distances are shifted by their minimum (cancels out in p) so the
    // exponentials never all underflow.
    const double perplexity = std::max(1.0, std::min(options.perplexity, static_cast<double>(n - 1) / 3.0));
    const double target_entropy = std::log(perplexity);
    std::vector<double> p(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i) {
        double nearest = std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < n; ++j)
            if (j != i) nearest = std::min(nearest, at(distance, i, j));
        double beta = 1, beta_low = -std::numeric_limits<double>::infinity(), beta_high = std::numeric_limits<double>::infinity();
        for (int step = 0; step < 200; ++step) {
            double sum = 0, weighted = 0;
            for (int64_t j = 0; j < n; ++j) {
                if (j == i) continue;
                const double shifted = at(distance, i, j) - nearest;
                const double value = std::exp(-shifted * beta);
                at(p, i, j) = value;
                sum += value;
                weighted += shifted * value;
            }
            const double entropy = std::log(sum) + beta * weighted / sum;
            for (int64_t j = 0; j < n; ++j) at(p, i, j) /= sum;
            const double excess = entropy - target_entropy;
            if (std::fabs(excess) < 1e-5) break;
            if (excess > 0) {  // too spread out: sharpen
                beta_low = beta;
                beta = std::isinf(beta_high) ? beta * 2 : (beta + beta_high) / 2;
            } else {
                beta_high = beta;
                beta = std::isinf(beta_low) ? beta / 2 : (beta + beta_low) / 2;
            }
        }
    }
    // Joint affinities, symmetrised.
    std::vector<double> joint(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
            if (i != j) at(joint, i, j) = std::max((at(p, i, j) + at(p, j, i)) / (2.0 * static_cast<double>(n)), 1e-12);

    std::mt19937_64 rng(options.seed);
    std::normal_distribution<double> start(0.0, 1e-4);
    for (double& v : y) v = start(rng);
    std::vector<double> velocity(y.size(), 0.0), gains(y.size(), 1.0), gradient(y.size(), 0.0);
    std::vector<double> kernel(static_cast<size_t>(n * n), 0.0);
    const int lying_iterations = std::min(250, options.iterations / 4);
    const double learning_rate = std::max(static_cast<double>(n) / 48.0, 50.0);
    for (int iteration = 0; iteration < options.iterations; ++iteration) {
        const double exaggeration = iteration < lying_iterations ? 12.0 : 1.0;
        const double momentum = iteration < lying_iterations ? 0.5 : 0.8;
        double kernel_sum = 0;
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i + 1; j < n; ++j) {
                const double dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1];
                const double value = 1.0 / (1.0 + dx * dx + dy * dy);
                at(kernel, i, j) = at(kernel, j, i) = value;
                kernel_sum += 2 * value;
            }
        for (int64_t i = 0; i < n; ++i) {
            double gx = 0, gy = 0;
            for (int64_t j = 0; j < n; ++j) {
                if (j == i) continue;
                const double k = at(kernel, i, j);
                const double force = (exaggeration * at(joint, i, j) - k / kernel_sum) * k;
                gx += force * (y[2 * i] - y[2 * j]);
                gy += force * (y[2 * i + 1] - y[2 * j + 1]);
            }
            gradient[2 * i] = 4 * gx;
            gradient[2 * i + 1] = 4 * gy;
        }
        double mean_x = 0, mean_y = 0;
        for (size_t e = 0; e < y.size(); ++e) {
            // Gains grow where the gradient keeps pointing against the last step, shrink where it flips.
            gains[e] = (gradient[e] > 0) != (velocity[e] > 0) ? gains[e] + 0.2 : std::max(gains[e] * 0.8, 0.01);
            velocity[e] = momentum * velocity[e] - learning_rate * gains[e] * gradient[e];
            y[e] += velocity[e];
            (e % 2 == 0 ? mean_x : mean_y) += y[e];
        }
        mean_x /= static_cast<double>(n), mean_y /= static_cast<double>(n);
        for (int64_t i = 0; i < n; ++i) y[2 * i] -= mean_x, y[2 * i + 1] -= mean_y;
    }
    return y;
}

// ---- k-means ------------------------------------------------------------------------------------

KmeansResult kmeans(const FeatureMatrix& features, int k, uint64_t seed, int max_iterations) {
    if (k < 1) fail("k-means needs at least one cluster (got ", k, ")");
    const int64_t n = features.rows, d = features.cols;
    KmeansResult result;
    result.cluster.assign(static_cast<size_t>(n), 0);
    if (n == 0) return result;
    result.k = static_cast<int>(std::min<int64_t>(k, n));
    std::mt19937_64 rng(seed);

    // k-means++: the first centre uniformly, each next one with probability ∝ squared distance to
    // the nearest centre so far.
    std::vector<int64_t> chosen{std::uniform_int_distribution<int64_t>(0, n - 1)(rng)};
    std::vector<double> nearest(static_cast<size_t>(n), std::numeric_limits<double>::infinity());
    while (static_cast<int>(chosen.size()) < result.k) {
        const double* last = features.values.data() + chosen.back() * d;
        double total = 0;
        for (int64_t r = 0; r < n; ++r) {
            nearest[static_cast<size_t>(r)] = std::min(nearest[static_cast<size_t>(r)], squared_distance(features, r, last));
            total += nearest[static_cast<size_t>(r)];
        }
        int64_t next = -1;
        if (total > 0) {
            const double draw = std::uniform_real_distribution<double>(0.0, total)(rng);
            double cumulative = 0;
            for (int64_t r = 0; r < n && next < 0; ++r) {
                cumulative += nearest[static_cast<size_t>(r)];
                if (nearest[static_cast<size_t>(r)] > 0 && cumulative > draw) next = r;
            }
            if (next < 0)  // the draw landed on the rounding of the last sum: take the last candidate
                for (int64_t r = n; r-- > 0 && next < 0;)
                    if (nearest[static_cast<size_t>(r)] > 0) next = r;
        } else {  // every point sits on a centre: any point not chosen yet
            for (int64_t r = 0; r < n && next < 0; ++r)
                if (std::find(chosen.begin(), chosen.end(), r) == chosen.end()) next = r;
        }
        chosen.push_back(next);
    }
    std::vector<double> centres(static_cast<size_t>(result.k * d));
    for (int c = 0; c < result.k; ++c)
        std::copy_n(features.values.data() + chosen[static_cast<size_t>(c)] * d, d, centres.begin() + c * d);

    std::vector<int> assignment(static_cast<size_t>(n), -1);
    for (result.iterations = 0; result.iterations < max_iterations; ++result.iterations) {
        bool moved = false;
        for (int64_t r = 0; r < n; ++r) {
            int best = 0;
            double best_distance = std::numeric_limits<double>::infinity();
            for (int c = 0; c < result.k; ++c) {
                const double dist = squared_distance(features, r, centres.data() + c * d);
                if (dist < best_distance) best = c, best_distance = dist;
            }
            if (assignment[static_cast<size_t>(r)] != best) assignment[static_cast<size_t>(r)] = best, moved = true;
        }
        if (!moved) break;
        std::vector<double> sums(centres.size(), 0.0);
        std::vector<int64_t> members(static_cast<size_t>(result.k), 0);
        for (int64_t r = 0; r < n; ++r) {
            const int c = assignment[static_cast<size_t>(r)];
            ++members[static_cast<size_t>(c)];
            for (int64_t e = 0; e < d; ++e) sums[static_cast<size_t>(c * d + e)] += features.at(r, e);
        }
        for (int c = 0; c < result.k; ++c)  // an empty cluster keeps its centre
            if (members[static_cast<size_t>(c)] > 0)
                for (int64_t e = 0; e < d; ++e)
                    centres[static_cast<size_t>(c * d + e)] = sums[static_cast<size_t>(c * d + e)] / static_cast<double>(members[static_cast<size_t>(c)]);
    }
    // Canonical numbering: clusters in order of their first member.
    std::vector<int> renumber(static_cast<size_t>(result.k), -1);
    int next_id = 0;
    for (int64_t r = 0; r < n; ++r) {
        int& id = renumber[static_cast<size_t>(assignment[static_cast<size_t>(r)])];
        if (id < 0) id = next_id++;
        result.cluster[static_cast<size_t>(r)] = id;
    }
    return result;
}

// ---- the whole projection -------------------------------------------------------------------------

const char* projection_method_name(ProjectionMethod method) { return method == ProjectionMethod::Tsne ? "tsne" : "pca"; }
const char* projection_features_name(ProjectionFeatures features) {
    return features == ProjectionFeatures::Patterns ? "patterns" : "fingerprints";
}

ProjectionMethod parse_projection_method(const std::string& name) {
    if (name == "pca") return ProjectionMethod::Pca;
    if (name == "tsne") return ProjectionMethod::Tsne;
    fail("unknown projection '", name, "' (expected pca or tsne)");
}

ProjectionFeatures parse_projection_features(const std::string& name) {
    if (name == "fingerprints") return ProjectionFeatures::Fingerprints;
    if (name == "patterns") return ProjectionFeatures::Patterns;
    fail("unknown features '", name, "' (expected fingerprints or patterns)");
}

HeadProjection project_heads(const CpuTileSource& source, const Session& session,
                             const std::vector<HeadFingerprint>& fingerprints, const ProjectionOptions& options) {
    if (!session.capture) fail("the session has no captured attention");
    const CaptureShape& shape = session.capture->shape();
    if (static_cast<int64_t>(fingerprints.size()) != int64_t(shape.n_layer) * shape.n_head)
        fail("head projection: ", fingerprints.size(), " fingerprints for ", int64_t(shape.n_layer) * shape.n_head, " heads");
    if (options.k < 0) fail("the number of clusters must not be negative (got ", options.k, ")");
    const FeatureMatrix features = options.features == ProjectionFeatures::Patterns
                                       ? pattern_features(source, *session.capture, options.grid, options.threads)
                                       : fingerprint_features(fingerprints);
    HeadProjection projection;
    projection.options = options;
    projection.feature_count = features.cols;
    std::vector<double> coordinates;
    if (options.method == ProjectionMethod::Pca) {
        PcaResult pca = pca_2d(features);
        coordinates = std::move(pca.coordinates);
        projection.explained[0] = pca.explained[0];
        projection.explained[1] = pca.explained[1];
    } else {
        coordinates = tsne_2d(features, {options.perplexity, options.tsne_iterations, options.seed});
    }
    std::vector<int> clusters(fingerprints.size(), -1);
    if (options.k > 0) clusters = kmeans(features, options.k, options.seed).cluster;
    for (size_t i = 0; i < fingerprints.size(); ++i) {
        HeadPoint point;
        point.layer = fingerprints[i].layer;
        point.head = fingerprints[i].head;
        point.x = coordinates[2 * i];
        point.y = coordinates[2 * i + 1];
        point.cluster = clusters[i];
        point.labels = fingerprints[i].labels;
        for (std::string& label : user_labels_of(session, point.layer, point.head)) point.labels.push_back(std::move(label));
        projection.points.push_back(std::move(point));
    }
    return projection;
}

std::string projection_csv(const HeadProjection& projection) {
    std::string out = "layer,head,x,y,cluster,labels\n";
    for (const HeadPoint& point : projection.points) {
        std::string labels;
        for (const std::string& label : point.labels) labels += (labels.empty() ? "" : ";") + label;
        out += std::to_string(point.layer) + "," + std::to_string(point.head) + "," + number_text(point.x) + "," +
               number_text(point.y) + "," + std::to_string(point.cluster) + "," + csv_field(labels) + "\n";
    }
    return out;
}

std::string projection_json(const HeadProjection& projection) {
    const ProjectionOptions& o = projection.options;
    json out{{"method", projection_method_name(o.method)},
             {"features", projection_features_name(o.features)},
             {"feature_count", projection.feature_count},
             {"k", o.k},
             {"seed", o.seed}};
    if (o.method == ProjectionMethod::Pca) out["explained_variance"] = {projection.explained[0], projection.explained[1]};
    else out["tsne"] = {{"perplexity", o.perplexity}, {"iterations", o.tsne_iterations}};
    json points = json::array();
    for (const HeadPoint& point : projection.points)
        points.push_back({{"layer", point.layer},
                          {"head", point.head},
                          {"x", point.x},
                          {"y", point.y},
                          {"cluster", point.cluster},
                          {"labels", point.labels}});
    out["points"] = std::move(points);
    return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

void write_projection(const std::string& path, const HeadProjection& projection) {
    const auto ends_with = [&](std::string_view suffix) {
        if (path.size() < suffix.size()) return false;
        std::string tail = path.substr(path.size() - suffix.size());
        std::transform(tail.begin(), tail.end(), tail.begin(), [](unsigned char c) { return std::tolower(c); });
        return tail == suffix;
    };
    if (ends_with(".csv")) write_file_atomically(path, projection_csv(projection));
    else if (ends_with(".json")) write_file_atomically(path, projection_json(projection) + "\n");
    else fail("cannot tell the format of '", path, "': name the output file .csv or .json");
}

}  // namespace attn
