#include "engine/decoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/generation.h"
#include "engine/memory.h"
#include "engine/provenance.h"
#include "engine/tile_source.h"

namespace attn {

namespace {

void append_token(Session& session, const Tokenizer& tokenizer, int32_t id) {
    const std::string bytes = tokenizer.token_bytes(id);
    Token token;
    token.id = id;
    token.begin = static_cast<uint32_t>(session.text.size());
    session.text += bytes;
    token.end = static_cast<uint32_t>(session.text.size());
    token.special = tokenizer.is_special(id);
    // Partial if the token's bytes don't form whole UTF-8 characters on their own.
    token.partial = first_invalid_utf8(bytes) != std::string::npos;
    session.tokens.push_back(token);
}

double milliseconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Decoder::Decoder(const Model& model, Backend& backend) : model_(model), backend_(backend) {}

Decoder::Decoder(const Model& model, Backend& backend, const GenerationRequest& request)
    : model_(model), backend_(backend), top_alternatives_(request.top_alternatives) {
    const Tokenizer& tokenizer = *model.tokenizer;
    const SamplingSettings& s = request.sampling;
    if (s.chat) {
        const ChatMessage message{"user", request.prompt};
        session_.text = tokenizer.apply_chat_template(std::span<const ChatMessage>(&message, 1), true);
    } else {
        session_.text = request.prompt;
    }
    // A chat template writes its own BOS text where it wants one; plain prompts get the model's BOS policy.
    session_.tokens = tokenizer.encode(session_.text, true, !s.chat && tokenizer.add_bos_token());
    start(request);
}

Decoder::Decoder(const Model& model, Backend& backend, std::string prompt_text, std::vector<Token> prompt_tokens,
                 const GenerationRequest& request)
    : model_(model), backend_(backend), top_alternatives_(request.top_alternatives) {
    for (const Token& t : prompt_tokens) {
        if (t.id < 0 || t.id >= model.config.vocab)
            fail("prompt token id ", t.id, " is outside the vocabulary (", model.config.vocab, ")");
        if (t.begin > t.end || t.end > prompt_text.size())
            fail("prompt token span [", t.begin, ", ", t.end, ") lies outside the prompt's ", prompt_text.size(), " bytes");
    }
    session_.text = std::move(prompt_text);
    session_.tokens = std::move(prompt_tokens);
    start(request);
}

void Decoder::start(const GenerationRequest& request) {
    const Model& model = model_;
    const SamplingSettings& s = request.sampling;
    if (s.max_new_tokens < 0) fail("the number of tokens to generate must be >= 0");
    if (s.beams < 1) fail("beam width must be >= 1");
    session_.config = model.config;
    // Only a captured session is saved, so only then is the model's content hash worth computing.
    session_.identity = request.capture ? model.hashed_identity() : model.identity;
    session_.sampling = s;
    if (session_.tokens.empty()) fail("the prompt is empty: nothing to run");
    session_.prompt_tokens = static_cast<int64_t>(session_.tokens.size());

    const int64_t positions = session_.prompt_tokens + s.max_new_tokens;
    if (request.capture) {
        require_memory(capture_bytes(model.config, positions), cat("capturing ", positions, " positions"));
        session_.capture = std::make_unique<CaptureStore>(capture_shape_of(model.config));
    }
    sampler_ = std::make_unique<Sampler>(s);
    // The capture's provenance record (engine/provenance.h): model, tokenizer, backend, machine, time.
    if (request.capture)
        session_.provenance = provenance_to_json(capture_provenance(model, backend_.name(), session_)).dump();
}

void Decoder::run_and_record_logits(std::span<const int32_t> ids, const ProgressFn& progress) {
    logits_.resize(model_.config.vocab);
    backend_.forward(ids, logits_, session_.capture.get(), progress);
    log_probs_ = log_softmax(logits_);
}

void Decoder::prefill(const ProgressFn& progress, const std::atomic<bool>* cancel) {
    if (prefilled_) fail("the prompt has already been run");
    backend_.truncate(0);
    if (session_.capture) session_.capture->truncate(0);
    std::vector<int32_t> prompt_ids;
    prompt_ids.reserve(session_.tokens.size());
    for (const Token& t : session_.tokens) prompt_ids.push_back(t.id);
    const auto started = std::chrono::steady_clock::now();
    run_and_record_logits(prompt_ids, [&](int64_t done, int64_t total) {
        if (progress) progress(done, total);
        if (cancel && cancel->load() && done < total) throw Cancelled("the prompt's prefill was cancelled");
    });
    session_.prefill_ms = milliseconds_since(started);
    prefilled_ = true;
}

std::string Decoder::stop_reason() const {
    if (!prefilled_) return "the prompt has not been run";
    if (!session_.steps.empty()) {
        const StepRecord& last = session_.steps.back();
        if (session_.sampling.stop_at_eos && last.token_id == model_.tokenizer->eos_id()) return "end of sequence";
        const size_t generated_from = session_.tokens[session_.prompt_tokens].begin;
        const std::string_view generated = std::string_view(session_.text).substr(generated_from);
        for (const std::string& stop : session_.sampling.stop_strings)
            if (!stop.empty() && generated.find(stop) != std::string_view::npos) return cat("stop string \"", stop, "\"");
    }
    // GPT-2's positions are learned: it cannot go past them (other models only degrade).
    if (model_.config.arch == Architecture::Gpt2 && session_.positions() >= model_.config.max_context)
        return cat("GPT-2's ", model_.config.max_context, " learned positions are used up");
    if (session_.positions() >= CaptureStore::kMaxPositions) return "the capture store is full";
    return {};
}

const StepRecord& Decoder::step(const StepChoice& choice) {
    if (!prefilled_) fail("run the prompt before stepping");
    const int32_t id = choice.token ? *choice.token : sampler_->pick(logits_);
    if (id < 0 || id >= model_.config.vocab)
        fail("token id ", id, " is outside the vocabulary (", model_.config.vocab, ")");
    StepRecord record;
    record.token_id = id;
    record.text = model_.tokenizer->token_bytes(id);
    record.logprob = log_probs_[id];
    cumulative_ += record.logprob;
    record.cumulative_logprob = cumulative_;
    record.top = top_alternatives(log_probs_, top_alternatives_);
    record.beam_id = choice.beam_id;
    record.forced = choice.forced_by_user;
    append_token(session_, *model_.tokenizer, id);
    run_and_record_logits(std::span<const int32_t>(&id, 1), {});
    record.kv_length = backend_.cached();
    record.forward_ms = backend_.last_timings().total_ms;
    record.attention_ms = backend_.last_timings().attention_ms;
    session_.steps.push_back(std::move(record));
    return session_.steps.back();
}

void Decoder::set_sampling(const SamplingSettings& settings) {
    if (settings.beams != session_.sampling.beams) fail("the beam width cannot change while decoding");
    session_.sampling = settings;
    sampler_ = std::make_unique<Sampler>(settings);
}

std::unique_ptr<Decoder> Decoder::branch(int64_t steps, std::unique_ptr<Backend>& backend_out) const {
    if (!prefilled_) fail("run the prompt before branching");
    if (steps < 0 || steps > static_cast<int64_t>(session_.steps.size()))
        fail("cannot branch at step ", steps, ": the session has ", session_.steps.size(), " steps");
    // The logits that chose step `steps` came from the position before it: rewind to just before
    // that position and run it again (same token, same values) to have them in hand.
    const int64_t keep = session_.prompt_tokens + steps - 1;
    backend_out = backend_.fork();
    backend_out->truncate(keep);
    auto child = std::unique_ptr<Decoder>(new Decoder(model_, *backend_out));
    Session& s = child->session_;
    s.config = session_.config;
    s.identity = session_.identity;
    s.sampling = session_.sampling;
    s.prompt_tokens = session_.prompt_tokens;
    s.tokens.assign(session_.tokens.begin(), session_.tokens.begin() + keep + 1);
    s.text = session_.text.substr(0, s.tokens.back().end);
    s.steps.assign(session_.steps.begin(), session_.steps.begin() + steps);
    s.keyframes.clear();
    for (const Keyframe& k : session_.keyframes)
        if (k.step < steps) s.keyframes.push_back(k);
    s.prefill_ms = session_.prefill_ms;
    s.beam_tree = session_.beam_tree;  // the search is the same; the branch may follow another hypothesis
    s.head_labels = session_.head_labels;
    s.provenance = session_.provenance;
    if (session_.capture) s.capture = copy_capture_prefix(*session_.capture, keep);
    child->top_alternatives_ = top_alternatives_;
    child->cumulative_ = steps > 0 ? session_.steps[steps - 1].cumulative_logprob : 0.0;
    child->sampler_ = std::make_unique<Sampler>(s.sampling);
    const int32_t last = s.tokens.back().id;
    child->run_and_record_logits(std::span<const int32_t>(&last, 1), {});
    child->prefilled_ = true;
    return child;
}

std::unique_ptr<CaptureStore> copy_capture_prefix(const CaptureStore& store, int64_t positions) {
    auto copy = std::make_unique<CaptureStore>(store.shape());
    const int64_t missing_from = copy->copy_prefix_from(store, positions);
    accumulate_overview_rows(*copy, missing_from, positions);
    return copy;
}

}  // namespace attn
