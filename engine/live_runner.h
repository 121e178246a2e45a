#pragma once
// The live debugger's runtime: a Decoder on its own thread, driven by commands from the UI
// (start, step, run, run to a goal, pause, cancel, branch, sampling changes) that never block the
// caller. After each step it checks the watchpoints, the rules (engine/rules.h: those whose scope
// includes decode steps) and the loop alarm, ranks the heads whose focus moved most, and publishes
// the step; the UI pulls what is new with sync() once per frame. The capture store is shared with
// the UI (it is safe for one appender and many readers); tokens, text and steps are copied (only
// what is new).
//
// Branches: branch(step, token) forks the current session before `step`, forces `token` there and
// makes the fork current; every branch is kept and can be shown again (select_branch).
// Recording: with LiveOptions::record_path every branch is appended to a session file as it
// decodes (the crash-safe .partial of SessionWriter, finished when the runner stops or restarts).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/attention_metrics.h"
#include "engine/backend.h"
#include "engine/decoder.h"
#include "engine/parallel.h"
#include "engine/rules.h"
#include "engine/watchpoint.h"

namespace attn {

enum class LiveState {
    Empty,       // nothing started yet
    Prefilling,  // running the prompt (progress in LiveStatus)
    Paused,      // ready for the next step
    Running,     // stepping until a goal, a watchpoint or a stop reason
    Finished,    // the model ended (end of sequence, stop string, context); branch or restart
    Failed,      // the last command failed (message says why); restart to go on
};
const char* to_string(LiveState state);

// Where a run stops (besides pause, the model's own stop reasons and the token budget).
struct RunGoal {
    int64_t steps = -1;               // this many more steps (-1: no limit but max_new_tokens)
    std::string stop_string;          // the text generated during this run contains it
    bool stop_at_watchpoints = true;  // a watchpoint fires, or a rule with pause = true is violated
    double steps_per_second = 0;      // 0: as fast as the model goes (demo mode paces itself)
};

struct LiveOptions {
    std::string record_path;  // "" = don't record
    // The runtime thread and its own worker pool run at this priority so that the UI thread and
    // the renderer keep the machine when they need it (engine/parallel.h).
    ThreadPriority runtime_priority = ThreadPriority::Background;
    bool loop_alarm = true;
    LoopAlarmParams loop;
};

// What the runner found at a step, beyond its StepRecord.
struct StepFindings {
    int64_t step = 0;
    std::vector<size_t> watchpoints_fired;  // indices into the watchpoint list at that time
    std::vector<WatchpointHit> hits;        // one per fired watchpoint
    std::optional<LoopAlarm> loop;          // set when the loop alarm fired
    // The rules violated at this step (each a RuleResult holding that step's failed check; .rule indexes
    // the rule set in force then). Rules apply their heads as resolved at the first step checked
    // (label selectors: the fingerprints of the session as it was then).
    std::vector<RuleResult> rule_violations;
    // Every head's change vs the previous position's query, ranked (the UI's "previous → shown"
    // diff reads it from here instead of computing it again).
    std::optional<StepDiff> change;
};

struct LiveStatus {
    LiveState state = LiveState::Empty;
    std::string message;            // the stop reason, pause reason or error
    int64_t prefill_done = 0, prefill_total = 0;
    int64_t steps = 0;              // published steps of the current branch
    size_t branch = 0, branches = 0;
    uint64_t generation = 0;        // changes whenever the current session is replaced
    bool busy = false;              // a command is queued or executing
    std::string backend;
};

class LiveRunner {
public:
    LiveRunner(const Model& model, BackendKind backend, LiveOptions options = {});
    ~LiveRunner();  // stops the thread (after the step in progress) and finishes the recordings
    LiveRunner(const LiveRunner&) = delete;
    LiveRunner& operator=(const LiveRunner&) = delete;

    // ---- commands (queued; executed in order on the runtime thread) ----
    void start(const GenerationRequest& request);  // tokenizes and prefills; ends Paused
    void step(int count = 1);
    void run(const RunGoal& goal = {});
    void pause();                                  // takes effect after the step in progress
    void cancel();                                 // a prefill in progress, or a run
    void set_sampling(const SamplingSettings& settings);
    void branch(int64_t step, int32_t token);      // force `token` at `step` on a new branch
    // Beam search (sampling.beams > 1): start() searches after the prefill and the run replays the
    // best hypothesis; follow_beam(node) replays the hypothesis ending at `node` of the session's
    // BeamTree instead, on a new branch from the step where it leaves the current one (or selects
    // the branch that already follows it).
    void follow_beam(int32_t node);
    void select_branch(size_t index);
    void set_watchpoints(std::vector<Watchpoint> watchpoints);
    void set_rules(std::shared_ptr<const RuleSet> rules);  // null or empty: none
    void add_keyframe(int64_t step, std::string name);

    // ---- UI side (never blocks on the model) ----
    LiveStatus status() const;
    // Brings `view` and `findings` (index = step) up to date with the current branch: appends what
    // is new, or replaces it all when `generation` is stale (then updates it). The capture store is
    // shared, not copied. Returns true if anything changed.
    bool sync(Session& view, std::vector<StepFindings>& findings, uint64_t& generation) const;
    std::vector<Watchpoint> watchpoints() const;
    std::shared_ptr<const RuleSet> rules() const;
    // The branch each branch was forked from and at which step (-1 for the first).
    struct BranchInfo {
        int64_t parent = -1;
        int64_t at_step = -1;
        int64_t steps = 0;
        std::string recording;  // its session file ("" when not recording)
        int32_t beam_node = -1;  // the beam hypothesis it replays (-1: sampled, not a beam)
    };
    std::vector<BranchInfo> branches() const;

    // Tests and scripts: waits until no command is queued or running (or the timeout passes).
    bool wait_idle(double timeout_seconds) const;

private:
    struct Branch;
    struct Command {
        enum Kind { Start, Step, Run, SetSampling, BranchAt, SelectBranch, SetWatchpoints, AddKeyframe, FollowBeam, SetRules };
        Kind kind = Start;
        GenerationRequest request;
        int64_t count = 0, step = 0;
        int32_t token = 0;
        RunGoal goal;
        SamplingSettings sampling;
        std::vector<Watchpoint> watchpoints;
        std::shared_ptr<const RuleSet> rules;
        std::string name;
    };

    void enqueue(Command command);
    void thread_main();
    void execute(Command& command);
    void do_start(const GenerationRequest& request);
    void do_steps(int64_t count, const RunGoal& goal, bool is_run);
    bool one_step(const StepChoice& choice, const RunGoal& goal, std::string& pause_reason);
    void do_follow_beam(int32_t node);
    // The decoder's stop reason, or the end of the beam hypothesis the branch replays.
    std::string stop_reason(const Branch& branch) const;
    // The next step's choice: the planned beam token, if the branch replays one.
    StepChoice planned_choice(const Branch& branch) const;
    void publish(bool replaced);
    void finish_recordings();
    void set_state(LiveState state, std::string message);

    const Model& model_;
    BackendKind backend_kind_;
    LiveOptions options_;

    // Runtime-thread state. The backend's and the metrics' parallel loops run on pool_ (at
    // runtime_priority), never on the shared pool the UI thread uses.
    std::unique_ptr<ThreadPool> pool_;
    std::vector<std::unique_ptr<Branch>> branches_;
    size_t current_ = 0;
    std::vector<Watchpoint> watchpoints_runtime_;
    std::shared_ptr<const RuleSet> rules_runtime_;
    std::vector<std::vector<HeadRef>> rule_heads_;  // per rule; resolved at the first step checked
    bool rule_heads_ready_ = false;

    // Shared (mutex_).
    mutable std::mutex mutex_;
    mutable std::condition_variable wake_, idle_;
    std::deque<Command> queue_;
    bool executing_ = false;
    bool stopping_ = false;
    LiveStatus status_;
    Session published_;  // the current branch's tokens, text and steps as the UI may see them
    std::vector<StepFindings> published_findings_;
    std::vector<Watchpoint> watchpoints_;
    std::shared_ptr<const RuleSet> rules_;
    std::vector<BranchInfo> branch_info_;
    std::atomic<bool> cancel_{false}, pause_{false};
    std::thread thread_;
};

}  // namespace attn
