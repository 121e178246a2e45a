#include "engine/beam_search.h"

#include <algorithm>
#include <cmath>

#include "engine/decoder.h"
#include "engine/error.h"
#include "engine/sampler.h"

namespace attn {

std::vector<int32_t> BeamTree::lineage(int32_t node) const {
    if (node < 0 || node >= static_cast<int32_t>(nodes.size())) fail("beam node ", node, " does not exist");
    std::vector<int32_t> path;
    for (int32_t n = node; n >= 0; n = nodes[n].parent) path.push_back(n);
    std::reverse(path.begin(), path.end());
    return path;
}

std::vector<int32_t> BeamTree::tokens_of(int32_t node) const {
    std::vector<int32_t> tokens;
    for (int32_t n : lineage(node)) tokens.push_back(nodes[n].token_id);
    return tokens;
}

double BeamTree::normalised_score(int32_t node) const {
    const BeamNode& n = nodes.at(node);
    return n.score / static_cast<double>(n.step + 1);
}

namespace {

struct Hypothesis {
    std::unique_ptr<Backend> backend;
    int32_t node = -1;  // its last token's node in the tree
    double score = 0;
    std::vector<float> logits;
};

}  // namespace

BeamTree beam_search(const Model& model, const Backend& prefilled, std::span<const float> prompt_logits,
                     const SamplingSettings& s, const std::function<void(int, int)>& progress,
                     const std::atomic<bool>* cancel) {
    const int beams = s.beams, vocab = model.config.vocab;
    if (beams < 1) fail("beam width must be >= 1");
    const int32_t eos = model.tokenizer->eos_id();
    BeamTree tree;
    tree.beams = beams;
    std::vector<Hypothesis> live(1);
    live[0].backend = prefilled.fork();
    live[0].logits.assign(prompt_logits.begin(), prompt_logits.end());
    for (int step = 0; step < s.max_new_tokens && !live.empty(); ++step) {
        if (cancel && cancel->load()) throw Cancelled("beam search cancelled");
        struct Candidate {
            double score;
            int parent;
            int32_t token;
        };
        std::vector<Candidate> candidates;
        for (int b = 0; b < static_cast<int>(live.size()); ++b) {
            const std::vector<float> lp = log_softmax(live[b].logits);
            for (const TokenAlternative& alt : top_alternatives(lp, beams * 2))
                candidates.push_back({live[b].score + std::log(static_cast<double>(alt.prob)), b, alt.id});
        }
        std::stable_sort(candidates.begin(), candidates.end(),
                         [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
        std::vector<Hypothesis> next;
        for (const Candidate& c : candidates) {
            if (static_cast<int>(next.size()) >= beams) break;
            const Hypothesis& parent = live[c.parent];
            BeamNode node;
            node.token_id = c.token;
            node.parent = parent.node;
            node.step = step;
            node.slot = static_cast<int32_t>(next.size());
            node.score = c.score;
            const int32_t index = static_cast<int32_t>(tree.nodes.size());
            if (s.stop_at_eos && c.token == eos) {
                node.finished = true;
                tree.nodes.push_back(node);
                tree.finals.push_back(index);
                continue;
            }
            tree.nodes.push_back(node);
            Hypothesis h;
            h.node = index;
            h.score = c.score;
            h.backend = parent.backend->fork();
            h.logits.resize(vocab);
            h.backend->forward(std::span<const int32_t>(&c.token, 1), h.logits, nullptr);
            next.push_back(std::move(h));
        }
        live = std::move(next);
        if (progress) progress(step + 1, s.max_new_tokens);
        if (static_cast<int>(tree.finals.size()) >= beams) break;
    }
    for (const Hypothesis& h : live)
        if (h.node >= 0) tree.finals.push_back(h.node);
    for (int32_t f : tree.finals)
        if (tree.best < 0 || tree.normalised_score(f) > tree.normalised_score(tree.best)) tree.best = f;
    return tree;
}

}  // namespace attn
