#include "ui/render/tile_cache.h"

#include "engine/parallel.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "engine/error.h"

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace attn::render {

namespace {
bool contains(const std::vector<TileKey>& keys, const TileKey& key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}
}  // namespace

TileCache::TileCache(VulkanContext& context, const CpuTileSource& source, const TileCacheOptions& options)
    : context_(context), source_(source), options_(options) {
    const uint64_t by_budget = options.budget_bytes / kSlotBytes;
    const uint64_t by_device = context.properties().limits.maxImageArrayLayers;
    if (by_budget < 1)
        fail("tile cache budget of ", options.budget_bytes, " bytes holds no tile (one needs ", kSlotBytes, " bytes)");
    capacity_ = static_cast<uint32_t>(std::min(by_budget, by_device));

    raw_ = context.create_image(VK_FORMAT_R32_SFLOAT, kEdge, kEdge, capacity_,
                                VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_STORAGE_BIT);
    color_ = context.create_image(VK_FORMAT_R8G8B8A8_UNORM, kEdge, kEdge, capacity_,
                                  VK_IMAGE_USAGE_STORAGE_BIT | VK_IMAGE_USAGE_SAMPLED_BIT);
    const int staging_tiles = std::max(2, options.staging_tiles);
    staging_ = context.create_buffer(kRawBytes * staging_tiles, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true);
    for (int i = staging_tiles - 1; i >= 0; --i) free_staging_.push_back(static_cast<uint32_t>(i));
    for (uint32_t s = capacity_; s-- > 0;) free_slots_.push_back(s);
    slot_owner_.resize(capacity_);

    const int workers = options.workers > 0 ? options.workers : std::max(1u, std::thread::hardware_concurrency());
    // The producers parallelise across tiles; BLAS threads inside each tile only oversubscribe the
    // cores the rasteriser needs (measured on 2 cores: 41 → 67 tiles/s, and shorter stalls).
    blas_threads_before_ = blas_threads();
    set_blas_threads(1);
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { producer_loop(); });
}

TileCache::~TileCache() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_ready_.notify_all();
    staging_free_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    set_blas_threads(blas_threads_before_);
    vkDeviceWaitIdle(context_.device());
    context_.destroy(staging_);
    context_.destroy(color_);
    context_.destroy(raw_);
}

void TileCache::request(std::span<const TileKey> keys) {
    std::lock_guard lock(mutex_);
    std::deque<TileKey> next;
    for (const TileKey& key : keys) {
        if (auto it = resident_.find(key); (it != resident_.end() && !it->second.stale) || contains(in_flight_, key))
            continue;
        if (std::any_of(arrivals_.begin(), arrivals_.end(), [&](const Arrival& a) { return a.key == key; })) continue;
        if (std::find(next.begin(), next.end(), key) != next.end()) continue;
        next.push_back(key);
    }
    for (const TileKey& old : pending_)
        if (std::find(next.begin(), next.end(), old) == next.end()) ++stats_.cancelled;
    pending_ = std::move(next);
    if (!pending_.empty()) work_ready_.notify_all();
}

void TileCache::producer_loop() {
#ifdef __linux__
    // Producers yield to the render thread (and to lavapipe's rasteriser threads on CPU machines).
    if (options_.low_priority_workers) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
#endif
    for (;;) {
        TileKey key;
        std::optional<TileKey> sibling;  // the other plane, delivered too when it is also wanted
        uint64_t epoch = 0;
        {
            std::unique_lock lock(mutex_);
            work_ready_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
            if (stopping_) return;
            key = pending_.front();
            pending_.pop_front();
            TileKey other = key;
            other.plane = key.plane == Plane::Sum ? Plane::Max : Plane::Sum;
            if (auto it = std::find(pending_.begin(), pending_.end(), other); it != pending_.end()) {
                pending_.erase(it);
                sibling = other;
                in_flight_.push_back(other);
            }
            in_flight_.push_back(key);
            epoch = epoch_;
        }
        const auto start = std::chrono::steady_clock::now();
        std::optional<Tile> tile;
        try {
            tile = source_.tile(key.request(), /*inline_work=*/true);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "attnscope: tile (layer %d head %d level %d x %lld y %lld) failed: %s\n", key.layer,
                         key.head, key.level, static_cast<long long>(key.tx), static_cast<long long>(key.ty), e.what());
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

        std::vector<TileKey> deliver{key};
        if (sibling) deliver.push_back(*sibling);
        for (const TileKey& k : deliver) {
            if (!tile) break;
            const std::vector<float>& values = k.plane == Plane::Sum ? tile->sum : tile->max;
            float peak = 0, smallest = 0;
            for (int r = 0; r < tile->valid_rows; ++r)
                for (int c = 0; c < tile->valid_cols; ++c) {
                    const float v = values[static_cast<size_t>(r) * kEdge + c];
                    peak = std::max(peak, v);
                    if (v > 0 && (smallest == 0 || v < smallest)) smallest = v;
                }
            uint32_t index;
            {
                std::unique_lock lock(mutex_);
                staging_free_.wait(lock, [&] { return stopping_ || !free_staging_.empty(); });
                if (stopping_) return;
                index = free_staging_.back();
                free_staging_.pop_back();
            }
            std::memcpy(static_cast<char*>(staging_.mapped) + index * kRawBytes, values.data(), kRawBytes);
            std::lock_guard lock(mutex_);
            arrivals_.push_back({k, index, tile->valid_rows, tile->valid_cols, peak, smallest, epoch});
        }
        std::lock_guard lock(mutex_);
        for (const TileKey& k : deliver) in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), k));
        if (tile) ++stats_.produced;
        stats_.produce_seconds += seconds;
    }
}

std::optional<uint32_t> TileCache::take_slot(uint64_t frame) {
    if (!free_slots_.empty()) {
        const uint32_t slot = free_slots_.back();
        free_slots_.pop_back();
        return slot;
    }
    // Least recently drawn, but never one drawn this frame: it may be on screen right now.
    auto victim = resident_.end();
    for (auto it = resident_.begin(); it != resident_.end(); ++it)
        if (it->second.last_used_frame < frame &&
            (victim == resident_.end() || it->second.last_used_frame < victim->second.last_used_frame))
            victim = it;
    if (victim == resident_.end()) return std::nullopt;
    const uint32_t slot = victim->second.slot;
    resident_.erase(victim);
    std::lock_guard lock(mutex_);
    ++stats_.evicted;
    return slot;
}

std::vector<TileKey> TileCache::upload_arrivals(VkCommandBuffer cmd, uint64_t frame, size_t max_uploads) {
    std::vector<Arrival> ready;
    {
        std::lock_guard lock(mutex_);
        const size_t take = std::min(max_uploads, arrivals_.size());
        for (size_t i = 0; i < take; ++i) {
            if (outdated(arrivals_[i].key, arrivals_[i].epoch)) staging_to_release_.push_back(arrivals_[i].staging_index);
            else ready.push_back(arrivals_[i]);
        }
        arrivals_.erase(arrivals_.begin(), arrivals_.begin() + static_cast<std::ptrdiff_t>(take));
    }
    std::vector<TileKey> uploaded;
    std::vector<VkBufferImageCopy> copies;
    uint64_t dropped = 0;
    for (const Arrival& a : ready) {
        staging_to_release_.push_back(a.staging_index);  // reusable once this frame's commands finish
        std::optional<uint32_t> slot;
        uint64_t colors = 0;
        if (auto it = resident_.find(a.key); it != resident_.end()) {
            if (!it->second.stale) continue;
            // The replacement of a stale tile takes its slot; its old colours stay on screen
            // (marked out of date) until the renderer recolours it.
            slot = it->second.slot;
            colors = it->second.color_stamp != 0 ? kStaleColorStamp : 0;
        } else {
            slot = take_slot(frame);
        }
        if (!slot) {
            ++dropped;
            continue;
        }
        CachedTile entry;
        entry.color_stamp = colors;
        entry.contents = ++uploads_;
        entry.slot = *slot;
        entry.valid_rows = a.valid_rows;
        entry.valid_cols = a.valid_cols;
        entry.max_value = a.max_value;
        entry.min_positive = a.min_positive;
        entry.last_used_frame = frame;
        resident_[a.key] = entry;
        slot_owner_[*slot] = a.key;
        VkBufferImageCopy copy{};
        copy.bufferOffset = a.staging_index * kRawBytes;
        copy.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, *slot, 1};
        copy.imageExtent = {static_cast<uint32_t>(kEdge), static_cast<uint32_t>(kEdge), 1};
        copies.push_back(copy);
        uploaded.push_back(a.key);
    }
    if (!copies.empty()) {
        // Earlier frames' compute reads of a recycled slot finish before the copy overwrites it.
        VkMemoryBarrier before{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        before.srcAccessMask = VK_ACCESS_SHADER_READ_BIT;
        before.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0,
                             nullptr, 0, nullptr);
        vkCmdCopyBufferToImage(cmd, staging_.buffer, raw_.image, VK_IMAGE_LAYOUT_GENERAL,
                               static_cast<uint32_t>(copies.size()), copies.data());
        VkMemoryBarrier after{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        after.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
        after.dstAccessMask = VK_ACCESS_SHADER_READ_BIT;
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &after, 0,
                             nullptr, 0, nullptr);
    }
    std::lock_guard lock(mutex_);
    stats_.uploaded += uploaded.size();
    stats_.dropped += dropped;
    return uploaded;
}

void TileCache::frame_complete() {
    if (staging_to_release_.empty()) return;
    {
        std::lock_guard lock(mutex_);
        free_staging_.insert(free_staging_.end(), staging_to_release_.begin(), staging_to_release_.end());
    }
    staging_to_release_.clear();
    staging_free_.notify_all();
}

CachedTile* TileCache::find(const TileKey& key) {
    auto it = resident_.find(key);
    return it == resident_.end() ? nullptr : &it->second;
}

std::optional<std::pair<TileKey, CachedTile*>> TileCache::nearest_ancestor(const TileKey& key, int max_generations,
                                                                          bool require_colored) {
    for (int g = 1; g <= max_generations; ++g) {
        const TileKey up = key.ancestor(g);
        CachedTile* tile = find(up);
        if (tile && (!require_colored || tile->color_stamp != 0)) return std::make_pair(up, tile);
    }
    return std::nullopt;
}

void TileCache::invalidate_rows_from(int64_t first_row) {
    for (auto& [key, tile] : resident_)
        if (key.query_end() > first_row) tile.stale = true;
    std::lock_guard lock(mutex_);
    invalidations_.emplace_back(++epoch_, first_row);
    while (invalidations_.size() > 256) invalidations_.pop_front();
}

bool TileCache::outdated(const TileKey& key, uint64_t epoch) const {
    if (epoch == epoch_) return false;
    // Older than every invalidation remembered: assume the worst.
    if (invalidations_.empty() || invalidations_.front().first > epoch + 1) return true;
    for (const auto& [at, first_row] : invalidations_)
        if (at > epoch && key.query_end() > first_row) return true;
    return false;
}

bool TileCache::busy() const {
    std::lock_guard lock(mutex_);
    return !pending_.empty() || !in_flight_.empty() || !arrivals_.empty();
}

TileCacheStats TileCache::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

}  // namespace attn::render
