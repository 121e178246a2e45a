#pragma once
// A value computed on a worker thread for a key (what it was computed from): the panels of
// issue 6 keep the last finished value on screen while the next one computes, run one job at a
// time (the newest wanted key starts when the running one ends), and never block a frame unless a
// script asks them to (finish()).
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <string>
#include <utility>

namespace attn::panels {

template <class Key, class Value>
class AsyncValue {
public:
    // Takes a finished job (waiting for it when `wait`). Returns true when a new value arrived.
    bool poll(bool wait = false) {
        if (!pending_.valid()) return false;
        if (!wait && pending_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
        shown_ = computing_;
        try {
            value_ = pending_.get();
            has_ = true;
            error_.clear();
        } catch (const std::exception& e) {
            has_ = false;
            error_ = e.what();
        }
        ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
        ++version_;
        return true;
    }

    // Wants the value of `key`: starts `compute` on a worker unless that key is shown or running.
    // A job for another key runs to its end first (its value is taken, then this key starts on a
    // later call).
    void want(const Key& key, std::function<Value()> compute) {
        poll(false);
        if (done_for(key) || (pending_.valid() && computing_ == key)) return;
        if (pending_.valid()) return;
        computing_ = key;
        started_ = std::chrono::steady_clock::now();
        pending_ = std::async(std::launch::async, std::move(compute));
    }

    // Blocks until the value for `key` is there (scripts and tests); compute as for want().
    void finish(const Key& key, const std::function<Value()>& compute) {
        for (int guard = 0; guard < 3 && !done_for(key); ++guard) {
            poll(true);
            want(key, compute);
            poll(true);
        }
    }

    // Whether want(key, …) would start a job now (take a finished one with poll() first): callers
    // build the job (snapshots of the session) only then.
    bool needs(const Key& key) const { return !done_for(key) && !pending_.valid(); }
    bool done_for(const Key& key) const { return (has_ || !error_.empty()) && shown_ == key && !pending_.valid(); }
    bool ready_for(const Key& key) const { return has_ && shown_ == key; }
    bool has_value() const { return has_; }
    bool busy() const { return pending_.valid(); }
    const Value& value() const { return value_; }
    Value& value() { return value_; }
    const Key& key() const { return shown_; }
    const std::string& error() const { return error_; }
    double ms() const { return ms_; }              // how long the last job took (from its start)
    unsigned long long version() const { return version_; }  // bumped by each finished job
    void wait() {
        if (pending_.valid()) pending_.wait();
    }

private:
    Key shown_{}, computing_{};
    Value value_{};
    bool has_ = false;
    std::string error_;
    std::future<Value> pending_;
    std::chrono::steady_clock::time_point started_{};
    double ms_ = 0;
    unsigned long long version_ = 0;
};

}  // namespace attn::panels
