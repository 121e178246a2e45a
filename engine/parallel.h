#pragma once
// A small persistent thread pool for the cpu backend's data-parallel loops.
// OpenBLAS threads its own GEMMs; this pool covers the per-head / per-row work around them.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attn {

// How a background thread shares the machine with the UI (Linux; elsewhere every thread is Normal).
//   Low:        nice 10 — still gets a fair share under load.
//   Background: SCHED_IDLE — runs only on CPU time nothing else wants, so the UI thread, the
//               renderer's threads and the display server always go first (the live debugger's
//               model: a frame never waits behind a decode step).
enum class ThreadPriority { Normal, Low, Background };
void set_current_thread_priority(ThreadPriority priority);

class ThreadPool {
public:
    // threads 0: hardware concurrency. The workers run at `priority` (the live debugger's
    // runtime has its own Background pool so that it yields to the UI).
    explicit ThreadPool(int threads = 0, ThreadPriority priority = ThreadPriority::Normal);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return static_cast<int>(workers_.size()) + 1; }
    // Calls fn(i) for i in [0, n), spread over the pool and the calling thread; returns when all are done.
    // Exceptions thrown by fn are rethrown on the calling thread (the first one).
    void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

    static ThreadPool& shared();  // process-wide pool sized to the machine
    // The pool this thread's parallel loops use: shared() unless a UseOnThisThread is alive.
    static ThreadPool& current();

    // Makes `pool` this thread's current() for the object's lifetime (the live runner's thread
    // points the cpu backend and its metrics at its own low-priority pool this way).
    class UseOnThisThread {
    public:
        explicit UseOnThisThread(ThreadPool& pool);
        ~UseOnThisThread();
        UseOnThisThread(const UseOnThisThread&) = delete;
        UseOnThisThread& operator=(const UseOnThisThread&) = delete;

    private:
        ThreadPool* previous_;
    };

private:
    void worker_loop(ThreadPriority priority);
    void run_items();

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::mutex job_mutex_;  // held by the caller whose loop owns the workers
    std::condition_variable wake_, done_;
    const std::function<void(int64_t)>* job_ = nullptr;
    int64_t job_size_ = 0;
    int64_t next_item_ = 0;
    int active_ = 0;
    uint64_t generation_ = 0;
    bool stopping_ = false;
    std::exception_ptr error_;
};

// Threads the BLAS library may use inside one call. Callers that already run many BLAS calls in
// parallel (the tile cache's producers) set 1 so the library doesn't oversubscribe the machine.
void set_blas_threads(int threads);
int blas_threads();

}  // namespace attn
