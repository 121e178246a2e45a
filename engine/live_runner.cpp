#include "engine/live_runner.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "engine/beam_search.h"
#include "engine/session_file.h"
#include "engine/tile_source.h"

namespace attn {

const char* to_string(LiveState state) {
    switch (state) {
        case LiveState::Empty: return "empty";
        case LiveState::Prefilling: return "prefilling";
        case LiveState::Paused: return "paused";
        case LiveState::Running: return "running";
        case LiveState::Finished: return "finished";
        case LiveState::Failed: return "failed";
    }
    return "?";
}

struct LiveRunner::Branch {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Decoder> decoder;
    std::unique_ptr<SessionWriter> writer;
    std::string path;
    std::vector<StepFindings> findings;
    int64_t parent = -1, at_step = -1;
    std::chrono::steady_clock::time_point last_flush{};
    // Beam search: the node indices (one per step) of the hypothesis this branch replays.
    std::vector<int32_t> plan;
    int32_t beam_node = -1;
};

namespace {

std::string branch_path(const std::string& path, size_t index) {
    if (path.empty() || index == 0) return path;
    std::filesystem::path p(path);
    return (p.parent_path() / (p.stem().string() + "-branch" + std::to_string(index) + p.extension().string())).string();
}

}  // namespace

LiveRunner::LiveRunner(const Model& model, BackendKind backend, LiveOptions options)
    : model_(model), backend_kind_(backend), options_(std::move(options)) {
    pool_ = std::make_unique<ThreadPool>(0, options_.runtime_priority);
    thread_ = std::thread([this] { thread_main(); });
}

LiveRunner::~LiveRunner() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        queue_.clear();
    }
    cancel_ = true;
    pause_ = true;
    wake_.notify_all();
    thread_.join();
}

// ---- commands ------------------------------------------------------------------------------

void LiveRunner::enqueue(Command command) {
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(command));
        status_.busy = true;
    }
    wake_.notify_all();
}

void LiveRunner::start(const GenerationRequest& request) {
    cancel_ = true;  // a prefill or run in progress gives way to the new start
    Command c;
    c.kind = Command::Start;
    c.request = request;
    enqueue(std::move(c));
}

void LiveRunner::step(int count) {
    Command c;
    c.kind = Command::Step;
    c.count = count;
    enqueue(std::move(c));
}

void LiveRunner::run(const RunGoal& goal) {
    Command c;
    c.kind = Command::Run;
    c.goal = goal;
    enqueue(std::move(c));
}

void LiveRunner::pause() {
    pause_ = true;
    wake_.notify_all();
}

void LiveRunner::cancel() {
    cancel_ = true;
    pause_ = true;
    wake_.notify_all();
}

void LiveRunner::set_sampling(const SamplingSettings& settings) {
    Command c;
    c.kind = Command::SetSampling;
    c.sampling = settings;
    enqueue(std::move(c));
}

void LiveRunner::branch(int64_t step, int32_t token) {
    Command c;
    c.kind = Command::BranchAt;
    c.step = step;
    c.token = token;
    enqueue(std::move(c));
}

void LiveRunner::follow_beam(int32_t node) {
    Command c;
    c.kind = Command::FollowBeam;
    c.token = node;
    enqueue(std::move(c));
}

void LiveRunner::select_branch(size_t index) {
    Command c;
    c.kind = Command::SelectBranch;
    c.count = static_cast<int64_t>(index);
    enqueue(std::move(c));
}

void LiveRunner::set_watchpoints(std::vector<Watchpoint> watchpoints) {
    {
        std::lock_guard lock(mutex_);
        watchpoints_ = watchpoints;
    }
    Command c;
    c.kind = Command::SetWatchpoints;
    c.watchpoints = std::move(watchpoints);
    enqueue(std::move(c));
}

void LiveRunner::set_rules(std::shared_ptr<const RuleSet> rules) {
    {
        std::lock_guard lock(mutex_);
        rules_ = rules;
    }
    Command c;
    c.kind = Command::SetRules;
    c.rules = std::move(rules);
    enqueue(std::move(c));
}

void LiveRunner::add_keyframe(int64_t step, std::string name) {
    Command c;
    c.kind = Command::AddKeyframe;
    c.step = step;
    c.name = std::move(name);
    enqueue(std::move(c));
}

// ---- UI side -------------------------------------------------------------------------------

LiveStatus LiveRunner::status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

bool LiveRunner::sync(Session& view, std::vector<StepFindings>& findings, uint64_t& generation) const {
    std::lock_guard lock(mutex_);
    if (generation != status_.generation) {
        view = published_;  // the capture store is a shared pointer: shared, not copied
        findings = published_findings_;
        generation = status_.generation;
        return true;
    }
    if (findings.size() < published_findings_.size())
        findings.insert(findings.end(), published_findings_.begin() + findings.size(), published_findings_.end());
    bool changed = false;
    if (view.tokens.size() < published_.tokens.size()) {
        view.tokens.insert(view.tokens.end(), published_.tokens.begin() + view.tokens.size(), published_.tokens.end());
        changed = true;
    }
    if (view.text.size() < published_.text.size()) {
        view.text.append(published_.text, view.text.size());
        changed = true;
    }
    if (view.steps.size() < published_.steps.size()) {
        view.steps.insert(view.steps.end(), published_.steps.begin() + view.steps.size(), published_.steps.end());
        changed = true;
    }
    if (view.keyframes.size() != published_.keyframes.size()) {
        view.keyframes = published_.keyframes;
        changed = true;
    }
    if (changed) view.sampling = published_.sampling;
    return changed;
}

std::vector<Watchpoint> LiveRunner::watchpoints() const {
    std::lock_guard lock(mutex_);
    return watchpoints_;
}

std::shared_ptr<const RuleSet> LiveRunner::rules() const {
    std::lock_guard lock(mutex_);
    return rules_;
}

std::vector<LiveRunner::BranchInfo> LiveRunner::branches() const {
    std::lock_guard lock(mutex_);
    return branch_info_;
}

bool LiveRunner::wait_idle(double timeout_seconds) const {
    std::unique_lock lock(mutex_);
    return idle_.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                          [&] { return queue_.empty() && !executing_; });
}

// ---- runtime thread --------------------------------------------------------------------------

void LiveRunner::set_state(LiveState state, std::string message) {
    std::lock_guard lock(mutex_);
    status_.state = state;
    status_.message = std::move(message);
}

void LiveRunner::thread_main() {
    // The model yields to the UI thread: the debugger keeps its frame rate while it decodes.
    set_current_thread_priority(options_.runtime_priority);
    ThreadPool::UseOnThisThread use_own_pool(*pool_);
    for (;;) {
        Command command;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) break;
            command = std::move(queue_.front());
            queue_.pop_front();
            executing_ = true;
        }
        // A flag raised before this command was taken belongs to an earlier one.
        if (command.kind != Command::Start) cancel_ = false;
        pause_ = false;
        try {
            execute(command);
        } catch (const Cancelled& e) {
            set_state(LiveState::Empty, e.what());
        } catch (const std::exception& e) {
            set_state(LiveState::Failed, e.what());
        }
        {
            std::lock_guard lock(mutex_);
            executing_ = false;
            status_.busy = !queue_.empty();
        }
        idle_.notify_all();
    }
    try {
        finish_recordings();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "attnscope: %s\n", e.what());
    }
}

void LiveRunner::execute(Command& command) {
    switch (command.kind) {
        case Command::Start: do_start(command.request); return;
        case Command::Step: do_steps(command.count, RunGoal{}, false); return;
        case Command::Run: do_steps(command.goal.steps, command.goal, true); return;
        case Command::SetSampling: {
            if (branches_.empty()) fail("start a prompt before changing its sampling");
            // The beam width is the search's, made at start: a new width applies on the next start.
            SamplingSettings settings = command.sampling;
            settings.beams = branches_[current_]->decoder->sampling().beams;
            branches_[current_]->decoder->set_sampling(settings);
            publish(false);
            return;
        }
        case Command::SetWatchpoints: watchpoints_runtime_ = std::move(command.watchpoints); return;
        case Command::SetRules:
            rules_runtime_ = std::move(command.rules);
            rule_heads_ready_ = false;
            return;
        case Command::AddKeyframe: {
            if (branches_.empty()) fail("start a prompt before marking keyframes");
            Session& session = branches_[current_]->decoder->session();
            if (command.step < 0 || command.step >= static_cast<int64_t>(session.steps.size()))
                fail("keyframe step ", command.step, " is outside the ", session.steps.size(), " steps");
            session.keyframes.push_back({command.step, command.name});
            publish(false);
            return;
        }
        case Command::BranchAt: {
            if (branches_.empty()) fail("start a prompt before branching");
            Branch& from = *branches_[current_];
            auto branch = std::make_unique<Branch>();
            branch->decoder = from.decoder->branch(command.step, branch->backend);
            branch->parent = static_cast<int64_t>(current_);
            branch->at_step = command.step;
            branch->findings.assign(from.findings.begin(),
                                    from.findings.begin() + std::min<size_t>(from.findings.size(), command.step));
            branch->path = branch_path(options_.record_path, branches_.size());
            if (!branch->path.empty())
                branch->writer = std::make_unique<SessionWriter>(branch->path, branch->decoder->session());
            branches_.push_back(std::move(branch));
            current_ = branches_.size() - 1;
            publish(true);
            std::string reason;
            StepChoice choice;
            choice.token = command.token;
            choice.forced_by_user = true;
            one_step(choice, RunGoal{}, reason);
            set_state(LiveState::Paused, cat("branch ", current_, ": token ", command.token, " forced at step ",
                                             command.step));
            return;
        }
        case Command::FollowBeam: do_follow_beam(command.token); return;
        case Command::SelectBranch:
            if (command.count < 0 || command.count >= static_cast<int64_t>(branches_.size()))
                fail("there is no branch ", command.count);
            current_ = static_cast<size_t>(command.count);
            publish(true);
            set_state(stop_reason(*branches_[current_]).empty() ? LiveState::Paused : LiveState::Finished,
                      cat("showing branch ", current_));
            return;
    }
}

void LiveRunner::do_start(const GenerationRequest& request) {
    cancel_ = false;
    finish_recordings();
    branches_.clear();
    rule_heads_ready_ = false;  // label selectors resolve again on the new session
    current_ = 0;
    auto branch = std::make_unique<Branch>();
    branch->backend = make_backend(backend_kind_, model_);
    branch->decoder = std::make_unique<Decoder>(model_, *branch->backend, request);
    branch->path = options_.record_path;
    {
        std::lock_guard lock(mutex_);
        status_.state = LiveState::Prefilling;
        status_.message = "running the prompt";
        status_.prefill_done = 0;
        status_.prefill_total = branch->decoder->session().prompt_tokens;
        status_.backend = branch->backend->name();
    }
    if (!branch->path.empty())
        branch->writer = std::make_unique<SessionWriter>(branch->path, branch->decoder->session());
    branches_.push_back(std::move(branch));
    Branch& b = *branches_.back();
    b.decoder->prefill(
        [&](int64_t done, int64_t total) {
            std::lock_guard lock(mutex_);
            status_.prefill_done = done;
            status_.prefill_total = total;
        },
        &cancel_);
    if (b.writer) b.writer->flush(b.decoder->session());
    b.last_flush = std::chrono::steady_clock::now();
    publish(true);
    if (request.sampling.beams > 1) {
        // The search runs without capture; the steps then replay its best hypothesis with capture.
        set_state(LiveState::Running, cat("searching with ", request.sampling.beams, " beams"));
        Session& session = b.decoder->session();
        session.beam_tree = beam_search(
            model_, *b.backend, b.decoder->next_logits(), request.sampling,
            [&](int step, int steps) { set_state(LiveState::Running, cat("beam search: step ", step, " of at most ", steps)); },
            &cancel_);
        if (session.beam_tree.best >= 0) {
            b.plan = session.beam_tree.lineage(session.beam_tree.best);
            b.beam_node = session.beam_tree.best;
        }
        publish(true);
    }
    const std::string stop = stop_reason(b);
    set_state(stop.empty() ? LiveState::Paused : LiveState::Finished,
              stop.empty() ? cat("prompt of ", b.decoder->session().prompt_tokens, " tokens run in ",
                                 static_cast<int64_t>(b.decoder->session().prefill_ms), " ms")
                           : stop);
}

void LiveRunner::do_steps(int64_t count, const RunGoal& goal, bool is_run) {
    if (branches_.empty()) fail("start a prompt before stepping");
    Branch& branch = *branches_[current_];
    Decoder& decoder = *branch.decoder;
    if (std::string stop = stop_reason(branch); !stop.empty()) {
        set_state(LiveState::Finished, stop);
        return;
    }
    // A run without a step goal is still bounded by the token budget.
    const int64_t limit = count >= 0 ? count : std::max(1, decoder.sampling().max_new_tokens);
    const size_t text_at_start = decoder.session().text.size();
    set_state(is_run ? LiveState::Running : LiveState::Paused, is_run ? "running" : "stepping");
    std::string reason;
    auto next_due = std::chrono::steady_clock::now();
    for (int64_t done = 0; done < limit; ++done) {
        if (goal.steps_per_second > 0 && done > 0) {
            next_due += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                std::chrono::duration<double>(1.0 / goal.steps_per_second));
            std::unique_lock lock(mutex_);
            wake_.wait_until(lock, next_due, [&] { return pause_.load() || stopping_; });
        }
        if (pause_ || cancel_) {
            reason = "paused";
            break;
        }
        {
            // Light commands apply between steps; anything else ends the run so it can go next.
            std::unique_lock lock(mutex_);
            bool yield = false;
            while (!queue_.empty() && !yield) {
                Command& next = queue_.front();
                if (next.kind == Command::SetSampling || next.kind == Command::SetWatchpoints ||
                    next.kind == Command::AddKeyframe || next.kind == Command::SetRules) {
                    Command light = std::move(next);
                    queue_.pop_front();
                    lock.unlock();
                    execute(light);
                    lock.lock();
                } else {
                    yield = is_run;
                    break;
                }
            }
            if (yield) {
                reason = "paused for the next command";
                break;
            }
        }
        if (!one_step(planned_choice(branch), goal, reason)) break;
        if (!goal.stop_string.empty() &&
            decoder.session().text.find(goal.stop_string, text_at_start) != std::string::npos) {
            reason = cat("reached \"", goal.stop_string, "\"");
            break;
        }
        if (!stop_reason(branch).empty()) break;
    }
    const std::string stop = stop_reason(branch);
    if (!stop.empty()) set_state(LiveState::Finished, stop);
    else set_state(LiveState::Paused, reason.empty() ? cat(limit, limit == 1 ? " step" : " steps", " done") : reason);
}

bool LiveRunner::one_step(const StepChoice& choice, const RunGoal& goal, std::string& pause_reason) {
    Branch& branch = *branches_[current_];
    Decoder& decoder = *branch.decoder;
    decoder.step(choice);
    const Session& session = decoder.session();
    const int64_t step = static_cast<int64_t>(session.steps.size()) - 1;

    StepFindings found;
    found.step = step;
    bool keep_going = true;
    if (session.capture) {
        const CpuTileSource source(*session.capture);
        const int64_t query = session.prompt_tokens + step;
        found.change = diff_steps(source, session, query - 1, query);
        for (size_t w = 0; w < watchpoints_runtime_.size(); ++w) {
            const WatchpointHit hit = evaluate(watchpoints_runtime_[w], session, source, step);
            if (hit.fired) {
                found.watchpoints_fired.push_back(w);
                found.hits.push_back(hit);
            }
        }
        if (rules_runtime_ && !rules_runtime_->rules.empty()) {
            if (!rule_heads_ready_) {
                rule_heads_ = resolve_rule_heads(*rules_runtime_, session);
                rule_heads_ready_ = true;
            }
            for (size_t r = 0; r < rules_runtime_->rules.size(); ++r) {
                if (!rules_runtime_->rules[r].checks_steps()) continue;
                RuleResult result = evaluate_rule(*rules_runtime_, r, session, source, rule_heads_[r], step);
                if (result.verdict == Verdict::Fail) found.rule_violations.push_back(std::move(result));
            }
        }
        if (options_.loop_alarm) {
            LoopAlarm alarm = detect_loop(session, source, step, options_.loop);
            if (alarm.fired) found.loop = std::move(alarm);
        }
    }
    if (!found.watchpoints_fired.empty() && goal.stop_at_watchpoints) {
        pause_reason = cat("watchpoint \"", watchpoints_runtime_[found.watchpoints_fired.front()].text,
                           "\" fired at step ", step);
        keep_going = false;
    }
    if (keep_going && goal.stop_at_watchpoints)
        for (const RuleResult& violation : found.rule_violations)
            if (rules_runtime_->rules[violation.rule].pause) {
                pause_reason = cat("rule \"", rules_runtime_->rules[violation.rule].id, "\" violated at step ", step);
                keep_going = false;
                break;
            }
    branch.findings.resize(static_cast<size_t>(step) + 1);
    branch.findings[step] = std::move(found);

    // Recording: flush at most every quarter second (each flush fsyncs), and whenever the run stops.
    const auto now = std::chrono::steady_clock::now();
    if (branch.writer && (!keep_going || now - branch.last_flush > std::chrono::milliseconds(250))) {
        branch.writer->flush(session);
        branch.last_flush = now;
    }
    publish(false);
    return keep_going;
}

std::string LiveRunner::stop_reason(const Branch& branch) const {
    std::string stop = branch.decoder->stop_reason();
    if (stop.empty() && branch.beam_node >= 0 && branch.decoder->session().steps.size() >= branch.plan.size())
        stop = cat("end of beam hypothesis ", branch.beam_node,
                   branch.decoder->session().beam_tree.nodes[branch.beam_node].finished ? " (end of sequence)" : "");
    return stop;
}

StepChoice LiveRunner::planned_choice(const Branch& branch) const {
    StepChoice choice;
    const size_t step = branch.decoder->session().steps.size();
    if (step < branch.plan.size()) {
        const BeamNode& node = branch.decoder->session().beam_tree.nodes[branch.plan[step]];
        choice.token = node.token_id;
        choice.beam_id = node.slot;
    }
    return choice;
}

void LiveRunner::do_follow_beam(int32_t node) {
    if (branches_.empty()) fail("start a prompt before following a beam");
    const BeamTree& tree = branches_[current_]->decoder->session().beam_tree;
    if (tree.empty()) fail("this session has no beam search (start it with beams > 1)");
    if (node < 0 || node >= static_cast<int32_t>(tree.nodes.size()))
        fail("beam node ", node, " is not in the tree (", tree.nodes.size(), " nodes)");
    const std::vector<int32_t> plan = tree.lineage(node);
    for (size_t b = 0; b < branches_.size(); ++b)
        if (branches_[b]->beam_node == node) {  // already followed: show it
            current_ = b;
            publish(true);
            set_state(stop_reason(*branches_[b]).empty() ? LiveState::Paused : LiveState::Finished,
                      cat("showing branch ", b, ", which follows beam hypothesis ", node));
            return;
        }
    // Fork where the hypothesis leaves what the current branch has decoded.
    Branch& from = *branches_[current_];
    const std::vector<StepRecord>& steps = from.decoder->session().steps;
    int64_t at = 0;
    while (at < static_cast<int64_t>(std::min(steps.size(), plan.size())) &&
           steps[at].token_id == tree.nodes[plan[at]].token_id)
        ++at;
    auto branch = std::make_unique<Branch>();
    branch->decoder = from.decoder->branch(at, branch->backend);
    branch->parent = static_cast<int64_t>(current_);
    branch->at_step = at;
    branch->plan = plan;
    branch->beam_node = node;
    branch->findings.assign(from.findings.begin(), from.findings.begin() + std::min<size_t>(from.findings.size(), at));
    branch->path = branch_path(options_.record_path, branches_.size());
    if (!branch->path.empty()) branch->writer = std::make_unique<SessionWriter>(branch->path, branch->decoder->session());
    branches_.push_back(std::move(branch));
    current_ = branches_.size() - 1;
    publish(true);
    std::string reason;
    if (stop_reason(*branches_[current_]).empty()) one_step(planned_choice(*branches_[current_]), RunGoal{}, reason);
    set_state(stop_reason(*branches_[current_]).empty() ? LiveState::Paused : LiveState::Finished,
              cat("branch ", current_, " follows beam hypothesis ", node, " from step ", at));
}

void LiveRunner::publish(bool replaced) {
    const Branch& branch = *branches_[current_];
    const Session& session = branch.decoder->session();
    std::lock_guard lock(mutex_);
    if (replaced) {
        published_ = session;
        published_findings_ = branch.findings;
        ++status_.generation;
    } else {
        published_.tokens.insert(published_.tokens.end(), session.tokens.begin() + published_.tokens.size(),
                                 session.tokens.end());
        published_.text.append(session.text, published_.text.size());
        published_.steps.insert(published_.steps.end(), session.steps.begin() + published_.steps.size(),
                                session.steps.end());
        published_.keyframes = session.keyframes;
        published_.sampling = session.sampling;
    }
    if (!replaced)
        published_findings_.insert(published_findings_.end(), branch.findings.begin() + published_findings_.size(),
                                   branch.findings.end());
    status_.steps = static_cast<int64_t>(session.steps.size());
    status_.branch = current_;
    status_.branches = branches_.size();
    branch_info_.clear();
    for (const auto& b : branches_)
        branch_info_.push_back(
            {b->parent, b->at_step, static_cast<int64_t>(b->decoder->session().steps.size()), b->path, b->beam_node});
}

void LiveRunner::finish_recordings() {
    for (auto& branch : branches_)
        if (branch->writer && branch->decoder->prefilled()) {
            branch->writer->finish(branch->decoder->session());
            branch->writer.reset();
        }
}

}  // namespace attn
