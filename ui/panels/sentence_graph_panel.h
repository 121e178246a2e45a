#pragma once
// Sentence graph (issue 6, "sentence" and "paragraph" granularity): a node per sentence, a directed
// edge from each sentence to the sentences it attends to (width = attention share, exact span
// masses for the text view's head set), node colours = communities (igraph Louvain or Leiden on the
// symmetrised weights) and the engine's force-directed layout (engine/text_segments.h). Hover a
// node for its sentence; click it to select that sentence in the text view.
//
// Paragraphs: a paragraph × paragraph flow (each row: where that paragraph's attention goes, as a
// share), its paragraphs grouped into topics by clustering the model's own hidden states
// (engine/paragraph_topics.h): rows and columns ordered by topic, a colour band per topic on both
// axes, a legend, the topic in the hover. A session captured without hidden states (an older file,
// the cuda backend) shows the flow in text order and says why there are no topics.
//
// Computed on a worker (segments, the whole matrix, the graph); the last graph stays up meanwhile.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/paragraph_topics.h"
#include "ui/panels/text_view_panel.h"

namespace attn::panels {

struct SentenceGraphState {
    bool paragraphs = false;  // false: the sentence graph; true: the paragraph flow
    float min_weight = 0.01f;  // edges below this share are dropped
    bool leiden = false;

    struct Key {
        MatrixKey matrix;
        bool paragraphs = false;
        float min_weight = 0;
        bool leiden = false;
        bool operator==(const Key&) const = default;
    };
    struct Result {
        SegmentsResult segments;
        SpanMatrix matrix;
        SentenceGraph graph;  // sentences only
        std::optional<ParagraphTopics> topics;  // paragraphs only, when the session has hidden states
        std::string topics_problem;             // paragraphs only: why there are no topics
    };
    AsyncValue<Key, Result> job;
    int64_t hovered_node = -1;
    int64_t selected_node = -1;
    // Where nodes were drawn this frame (framebuffer pixels: centre x, y and radius), for tests.
    std::vector<std::array<float, 3>> drawn_nodes;
};

// heads: the text view's head set (the graph uses the same).
void update_sentence_graph(const app::DebuggerModel& model, SentenceGraphState& state, const std::vector<HeadRef>& heads,
                           bool wait = false);
bool sentence_graph_settled(const app::DebuggerModel& model, const SentenceGraphState& state, const std::vector<HeadRef>& heads);
// Returns the sentence (segment index at sentence level) clicked, if any.
std::optional<int64_t> draw_sentence_graph_panel(app::DebuggerModel& model, SentenceGraphState& state, TextViewState& text,
                                                 const FingerprintsState& fingerprints, const std::vector<HeadLabel>& labels);
nlohmann::json sentence_graph_json(const app::DebuggerModel& model, const SentenceGraphState& state, const std::vector<HeadRef>& heads);
// The matrix shown (sentence or paragraph shares, row-normalised), by extension: .csv, .npy, .json.
void export_graph_matrix(const app::DebuggerModel& model, SentenceGraphState& state, const std::vector<HeadRef>& heads,
                         const std::string& path);

}  // namespace attn::panels
