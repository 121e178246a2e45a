#include "engine/parallel.h"

#include <cblas.h>

#include <atomic>
#ifdef __linux__
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace attn {

void set_current_thread_priority(ThreadPriority priority) {
#ifdef __linux__
    const auto tid = static_cast<id_t>(syscall(SYS_gettid));
    switch (priority) {
        case ThreadPriority::Normal: return;
        case ThreadPriority::Low: setpriority(PRIO_PROCESS, tid, 10); return;
        case ThreadPriority::Background: {
            sched_param param{};
            param.sched_priority = 0;
            // Needs no privilege; where it is refused anyway (seccomp), the lowest nice does most of it.
            if (sched_setscheduler(static_cast<pid_t>(tid), SCHED_IDLE, &param) != 0) setpriority(PRIO_PROCESS, tid, 19);
            return;
        }
    }
#else
    (void)priority;
#endif
}

ThreadPool::ThreadPool(int threads, ThreadPriority priority) {
    int total = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
    if (total < 1) total = 1;
    for (int i = 1; i < total; ++i) workers_.emplace_back([this, priority] { worker_loop(priority); });
}

namespace {
thread_local ThreadPool* g_current_pool = nullptr;
}

ThreadPool& ThreadPool::current() { return g_current_pool ? *g_current_pool : shared(); }

ThreadPool::UseOnThisThread::UseOnThisThread(ThreadPool& pool) : previous_(g_current_pool) { g_current_pool = &pool; }
ThreadPool::UseOnThisThread::~UseOnThisThread() { g_current_pool = previous_; }

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

void ThreadPool::worker_loop(ThreadPriority priority) {
    set_current_thread_priority(priority);
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
