#include "engine/paragraph_topics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"

namespace attn {

namespace {

double distance(const FeatureMatrix& points, int64_t a, int64_t b) {
    double sum = 0;
    for (int64_t c = 0; c < points.cols; ++c) {
        const double diff = points.at(a, c) - points.at(b, c);
        sum += diff * diff;
    }
    return std::sqrt(sum);
}

double within_cluster_squares(const FeatureMatrix& points, const std::vector<int>& cluster, int k) {
    std::vector<double> centres(static_cast<size_t>(k * points.cols), 0.0);
    std::vector<int64_t> counts(static_cast<size_t>(k), 0);
    for (int64_t r = 0; r < points.rows; ++r) {
        const int c = cluster[static_cast<size_t>(r)];
        ++counts[static_cast<size_t>(c)];
        for (int64_t e = 0; e < points.cols; ++e) centres[static_cast<size_t>(c * points.cols + e)] += points.at(r, e);
    }
    double total = 0;
    for (int64_t r = 0; r < points.rows; ++r) {
        const int c = cluster[static_cast<size_t>(r)];
        for (int64_t e = 0; e < points.cols; ++e) {
            const double diff =
                points.at(r, e) - centres[static_cast<size_t>(c * points.cols + e)] / double(counts[static_cast<size_t>(c)]);
            total += diff * diff;
        }
    }
    return total;
}

// Renumbers clusters in order of their first row; returns how many there are.
int renumber_in_order(std::vector<int>& cluster) {
    std::vector<int> mapping;
    std::vector<int> renamed(cluster.size());
    for (size_t r = 0; r < cluster.size(); ++r) {
        const int c = cluster[r];
        if (c >= static_cast<int>(mapping.size())) mapping.resize(static_cast<size_t>(c) + 1, -1);
        if (mapping[static_cast<size_t>(c)] < 0) mapping[static_cast<size_t>(c)] = static_cast<int>(
            std::count_if(mapping.begin(), mapping.end(), [](int m) { return m >= 0; }));
        renamed[r] = mapping[static_cast<size_t>(c)];
    }
    cluster = std::move(renamed);
    return static_cast<int>(std::count_if(mapping.begin(), mapping.end(), [](int m) { return m >= 0; }));
}

// Step 2: unit-length rows (a zero row stays zero).
FeatureMatrix unit_rows(const FeatureMatrix& vectors) {
    FeatureMatrix out = vectors;
    for (int64_t r = 0; r < out.rows; ++r) {
        double norm = 0;
        for (int64_t c = 0; c < out.cols; ++c) norm += out.at(r, c) * out.at(r, c);
        norm = std::sqrt(norm);
        if (norm > 0)
            for (int64_t c = 0; c < out.cols; ++c) out.at(r, c) /= norm;
    }
    return out;
}

}  // namespace

std::string ParagraphTopics::description(int t) const {
    if (t < 0 || t >= static_cast<int>(members.size())) fail("topic ", t, " does not exist (", members.size(), " topics)");
    std::string text;
    for (int64_t segment : members[static_cast<size_t>(t)]) text += cat(text.empty() ? "" : ", ", "¶", segment);
    return text;
}

double mean_silhouette(const FeatureMatrix& points, std::span<const int> cluster, int k) {
    const int64_t n = points.rows;
    if (static_cast<int64_t>(cluster.size()) != n) fail("silhouette: ", cluster.size(), " cluster ids for ", n, " points");
    if (n == 0 || k < 2) return 0;
    std::vector<int64_t> sizes(static_cast<size_t>(k), 0);
    for (int c : cluster) {
        if (c < 0 || c >= k) fail("silhouette: cluster id ", c, " outside 0..", k - 1);
        ++sizes[static_cast<size_t>(c)];
    }
    double total = 0;
    std::vector<double> sums(static_cast<size_t>(k));
    for (int64_t i = 0; i < n; ++i) {
        const int own = cluster[static_cast<size_t>(i)];
        if (sizes[static_cast<size_t>(own)] < 2) continue;  // alone in its cluster: s = 0
        std::fill(sums.begin(), sums.end(), 0.0);
        for (int64_t j = 0; j < n; ++j)
            if (j != i) sums[static_cast<size_t>(cluster[static_cast<size_t>(j)])] += distance(points, i, j);
        const double a = sums[static_cast<size_t>(own)] / double(sizes[static_cast<size_t>(own)] - 1);
        double b = std::numeric_limits<double>::infinity();
        for (int c = 0; c < k; ++c)
            if (c != own && sizes[static_cast<size_t>(c)] > 0) b = std::min(b, sums[static_cast<size_t>(c)] / double(sizes[static_cast<size_t>(c)]));
        if (!std::isfinite(b)) continue;  // a single non-empty cluster
        const double larger = std::max(a, b);
        if (larger > 0) total += (b - a) / larger;
    }
    return total / double(n);
}

ParagraphTopics cluster_paragraph_vectors(const FeatureMatrix& vectors, const ParagraphTopicOptions& options) {
    if (options.max_topics < 1) fail("paragraph topics: at most ", options.max_topics, " topics makes no sense");
    if (options.restarts < 1) fail("paragraph topics: k-means needs at least one run per k (got ", options.restarts, ")");
    for (double v : vectors.values)
        if (!std::isfinite(v)) fail("paragraph topics: a paragraph's hidden state is not finite");
    ParagraphTopics result;
    result.topic.assign(static_cast<size_t>(vectors.rows), 0);
    const FeatureMatrix points = unit_rows(vectors);
    double best_silhouette = -std::numeric_limits<double>::infinity();
    std::vector<int> best;
    int best_k = 1;
    for (int k = 2; k <= std::min<int64_t>(options.max_topics, vectors.rows - 1); ++k) {
        std::vector<int> chosen;
        double chosen_squares = std::numeric_limits<double>::infinity();
        for (int run = 0; run < options.restarts; ++run) {
            KmeansResult run_result = kmeans(points, k, options.seed + static_cast<uint64_t>(run));
            const double squares = within_cluster_squares(points, run_result.cluster, run_result.k);
            if (squares < chosen_squares) chosen_squares = squares, chosen = std::move(run_result.cluster);
        }
        const int found = renumber_in_order(chosen);  // Lloyd may empty a cluster
        const double s = mean_silhouette(points, chosen, found);
        result.silhouette_by_k.push_back(s);
        if (found >= 2 && s > best_silhouette) best_silhouette = s, best = std::move(chosen), best_k = found;
    }
    if (best_k >= 2 && best_silhouette >= options.min_silhouette) {
        result.topic = std::move(best);
        result.topics = best_k;
        result.silhouette = best_silhouette;
    } else {
        result.topics = vectors.rows > 0 ? 1 : 0;
    }
    result.members.assign(static_cast<size_t>(result.topics), {});
    for (int64_t r = 0; r < vectors.rows; ++r) result.members[static_cast<size_t>(result.topic[static_cast<size_t>(r)])].push_back(r);
    return result;
}

std::string hidden_states_problem(const Session& session) {
    if (!session.capture) return "this session has no capture, so no hidden states";
    const CaptureStore& store = *session.capture;
    if (store.hidden_width() == 0)
        return cat("this session was captured without hidden states (by an attnscope before session format 2, or by the "
                   "cuda backend, which does not record them yet)",
                   session.recovered_incomplete ? cat(", or its file was cut short before them (", session.recovery_problem, ")")
                                                : std::string(),
                   "; re-capture it with this attnscope and --backend cpu");
    if (session.recovered_incomplete && store.hidden_positions() < std::min(store.positions(), session.positions()))
        return cat("the session file's hidden states stop at position ", store.hidden_positions(), " of ",
                   std::min(store.positions(), session.positions()), " (the file was cut short or damaged: ",
                   session.recovery_problem.empty() ? "no reason recorded" : session.recovery_problem,
                   "); re-capture it for topics");
    return {};
}

ParagraphTopics paragraph_topics(const Session& session, std::span<const Segment> segments,
                                 const ParagraphTopicOptions& options) {
    if (const std::string problem = hidden_states_problem(session); !problem.empty())
        fail("paragraph topics need the model's hidden states: ", problem);
    const CaptureStore& store = *session.capture;
    const int width = store.hidden_width();
    const int64_t available = store.hidden_positions();
    std::vector<int64_t> rows_segment;
    std::vector<double> values;
    int64_t missing = 0;
    for (size_t s = 0; s < segments.size(); ++s) {
        const Segment& segment = segments[s];
        if (segment.kind != SegmentKind::Paragraph) continue;
        if (segment.first < 0 || segment.last < segment.first)
            fail("paragraph topics: segment ", s, " has token range [", segment.first, ", ", segment.last, ")");
        const int64_t first = segment.first == 0 && segment.last > 1 ? 1 : segment.first;  // position 0: see the header
        const int64_t last = std::min(segment.last, available);
        missing += segment.last - std::max(last, segment.first);
        if (last <= first) continue;
        std::vector<double> mean(static_cast<size_t>(width), 0.0);
        for (int64_t p = first; p < last; ++p) {
            const float* h = store.hidden(p);
            for (int c = 0; c < width; ++c) mean[static_cast<size_t>(c)] += h[c];
        }
        for (double& v : mean) v /= double(last - first);
        values.insert(values.end(), mean.begin(), mean.end());
        rows_segment.push_back(static_cast<int64_t>(s));
    }
    FeatureMatrix vectors;
    vectors.rows = static_cast<int64_t>(rows_segment.size());
    vectors.cols = width;
    vectors.values = std::move(values);
    ParagraphTopics by_row = cluster_paragraph_vectors(vectors, options);

    ParagraphTopics result = by_row;
    result.topic.assign(segments.size(), -1);
    for (size_t r = 0; r < rows_segment.size(); ++r) result.topic[static_cast<size_t>(rows_segment[r])] = by_row.topic[r];
    for (std::vector<int64_t>& members : result.members)
        for (int64_t& m : members) m = rows_segment[static_cast<size_t>(m)];
    result.hidden_width = width;
    result.positions_without_hidden = missing;
    return result;
}

}  // namespace attn
