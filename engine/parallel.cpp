#include "engine/parallel.h"

#include <cblas.h>

#include <atomic>

namespace attn {

ThreadPool::ThreadPool(int threads) {
    int total = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
    if (total < 1) total = 1;
    for (int i = 1; i < total; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
}

ThreadPool& ThreadPool::shared() {
    static ThreadPool pool;
    return pool;
}

void ThreadPool::run_items() {
    // Items are claimed one at a time under the lock: the loops here are coarse (a head, a block of rows).
    for (;;) {
        int64_t item;
        {
            std::lock_guard lock(mutex_);
            if (next_item_ >= job_size_) return;
            item = next_item_++;
        }
        try {
            (*job_)(item);
        } catch (...) {
            std::lock_guard lock(mutex_);
            if (!error_) error_ = std::current_exception();
            next_item_ = job_size_;
        }
    }
}

void ThreadPool::worker_loop() {
    uint64_t seen = 0;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
            ++active_;
        }
        run_items();
        {
            std::lock_guard lock(mutex_);
            --active_;
        }
        done_.notify_all();
    }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    // One job at a time: nested or concurrent callers run their loop inline.
    static thread_local bool inside = false;
    std::unique_lock busy(job_mutex_, std::try_to_lock);
    if (inside || !busy.owns_lock()) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    inside = true;
    {
        std::lock_guard lock(mutex_);
        job_ = &fn;
        job_size_ = n;
        next_item_ = 0;
        error_ = nullptr;
        ++generation_;
    }
    wake_.notify_all();
    run_items();
    {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return active_ == 0 && next_item_ >= job_size_; });
        job_ = nullptr;
    }
    inside = false;
    if (error_) std::rethrow_exception(error_);
}

void set_blas_threads(int threads) { openblas_set_num_threads(threads); }
int blas_threads() { return openblas_get_num_threads(); }

}  // namespace attn
