#pragma once
// Paragraph topics (issue 6, "paragraph" granularity): the session's paragraphs grouped into topics
// by clustering the model's own hidden states.
//
// Method (deterministic: the same session, segments and options give the same topics):
//  1. Each paragraph (a segment of kind Paragraph, engine/text_segments.h) becomes the mean of the
//     hidden states of its positions (CaptureStore::hidden: the state after the output norm, the
//     vector the unembedding reads). Position 0 is left out of a paragraph that has other positions:
//     it sees no context and carries the attention sink's outsized state. Positions without a hidden
//     state (a live session's newest token, mid-step) are left out; a paragraph with none is not
//     clustered. Special-token and whitespace-only segments are never clustered (topic −1).
//  2. The paragraph means are scaled to unit length, so distances are cosine distances. They are not
//     centred on their own mean: with few paragraphs that distorts the angles (the three-paragraph
//     prompt of the [topics] test, two on cats and one on interest rates, on SmolLM2-135M: silhouette
//     of the cats-vs-rates split 0.30 uncentred, 0.21 centred).
//  3. k-means (engine/head_projection.h: k-means++ seeding, Lloyd iterations) for every k from 2 to
//     min(max_topics, paragraphs − 1), each k run `restarts` times (seeds seed, seed + 1, …) keeping
//     the lowest within-cluster sum of squares. The k with the highest mean silhouette (Rousseeuw
//     1987, Euclidean on the unit vectors; a paragraph alone in its topic scores 0) wins, the
//     smaller k on ties. If that silhouette is below min_silhouette (0.25: Kaufman & Rousseeuw's
//     "no substantial structure"), or there are fewer than 3 paragraphs, every paragraph is one topic.
//  4. Topics are numbered in text order of their first paragraph (topic 0 holds the first).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/head_projection.h"
#include "engine/session.h"
#include "engine/text_segments.h"

namespace attn {

struct ParagraphTopicOptions {
    int max_topics = 8;
    double min_silhouette = 0.25;
    uint64_t seed = 1;
    int restarts = 8;
};

struct ParagraphTopics {
    std::vector<int> topic;                      // per segment; −1: not clustered
    std::vector<std::vector<int64_t>> members;   // per topic: its segment indices, in text order
    int topics = 0;
    double silhouette = 0;                       // of the chosen topics (0 for one topic)
    std::vector<double> silhouette_by_k;         // [k − 2] for every k tried
    int hidden_width = 0;
    int64_t positions_without_hidden = 0;        // positions of clustered-kind segments left out (live lag)

    // "¶0, ¶2" (segment indices, as the paragraph flow labels them).
    std::string description(int topic) const;
};

// Why the session has no usable hidden states for topics, or "" when it has them. Names what to do.
std::string hidden_states_problem(const Session& session);

// Mean silhouette of a clustering of the rows of `points` (k clusters, ids 0..k−1).
double mean_silhouette(const FeatureMatrix& points, std::span<const int> cluster, int k);

// Steps 2–4 above on ready-made paragraph vectors (one row each): the topic of every row.
// For tests and for callers with their own vectors. ParagraphTopics::topic is then per row.
ParagraphTopics cluster_paragraph_vectors(const FeatureMatrix& vectors, const ParagraphTopicOptions& options = {});

// The whole method. segments: segment_session(session, Granularity::Paragraph) (any partition of the
// positions works; only kind Paragraph is clustered). Fails (attn::Error) when the session has no
// hidden states (hidden_states_problem), or when a session file's hidden-state section was cut short.
ParagraphTopics paragraph_topics(const Session& session, std::span<const Segment> segments,
                                 const ParagraphTopicOptions& options = {});

}  // namespace attn
