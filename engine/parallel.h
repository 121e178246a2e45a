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

class ThreadPool {
public:
    explicit ThreadPool(int threads = 0);  // 0: hardware concurrency
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return static_cast<int>(workers_.size()) + 1; }
    // Calls fn(i) for i in [0, n), spread over the pool and the calling thread; returns when all are done.
    // Exceptions thrown by fn are rethrown on the calling thread (the first one).
    void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

    static ThreadPool& shared();  // process-wide pool sized to the machine

private:
    void worker_loop();
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
