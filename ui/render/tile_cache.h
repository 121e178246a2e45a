#pragma once
// TileCache (DESIGN.md §2): exact 256×256 tiles of raw attention values on the GPU.
//
// - Storage: two texture arrays with one layer per slot — the raw values (R32F, written by
//   transfers from staging) and the same tile coloured (RGBA8, written by the renderer's
//   colorize pass). The slot count follows from a byte budget (default 256 MiB) and slots are
//   recycled least-recently-used, never evicting a tile drawn in the current frame.
// - Producers: CPU worker threads call CpuTileSource::tile for requested keys, most urgent first,
//   and write the requested plane into a persistently mapped staging buffer. request() replaces
//   the whole pending list, which is how stale requests (from a view that moved on) are cancelled.
// - The main thread never waits on a producer: upload_arrivals() takes whatever is ready.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/tile_source.h"
#include "ui/render/vulkan_context.h"

namespace attn::render {

enum class Plane : uint8_t { Sum, Max };

// A tile of the pyramid, addressed like TileRequest (plus the plane): square cells from query 0
// for the map, 2^row_level() queries × 2^level keys from first_query for the waterfall.
struct TileKey {
    int layer = 0, head = 0, level = 0;
    int64_t tx = 0, ty = 0;
    Plane plane = Plane::Max;
    int row_level_delta = 0;  // row level − level (kept by ancestors: both levels go up together)
    int64_t first_query = 0;

    bool operator==(const TileKey&) const = default;
    int row_level() const { return level + row_level_delta; }
    TileRequest request() const { return {layer, head, level, tx, ty, row_level_delta, first_query}; }
    // One past the last query row the tile covers (rows past the end of the matrix included).
    int64_t query_end() const { return first_query + (ty + 1) * (int64_t(Tile::kEdge) << row_level()); }
    // The tile `generations` levels up that contains this one.
    TileKey ancestor(int generations) const {
        TileKey up = *this;
        up.level += generations;
        up.tx >>= generations;
        up.ty >>= generations;
        return up;
    }
};

struct TileKeyHash {
    size_t operator()(const TileKey& k) const {
        uint64_t h = static_cast<uint64_t>(k.layer) * 0x9E3779B97F4A7C15ull;
        for (uint64_t part : {uint64_t(k.head), uint64_t(k.level), uint64_t(k.tx), uint64_t(k.ty), uint64_t(k.plane),
                              uint64_t(k.row_level_delta), uint64_t(k.first_query)})
            h = (h ^ part) * 0x100000001B3ull + (h >> 29);
        return static_cast<size_t>(h);
    }
};

// What the cache knows about a resident tile.
struct CachedTile {
    uint32_t slot = 0;            // layer in both texture arrays
    int valid_rows = 0, valid_cols = 0;
    float max_value = 0;          // over valid cells
    float min_positive = 0;       // smallest value > 0 (0 if none)
    uint64_t last_used_frame = 0;
    uint64_t color_stamp = 0;     // renderer's colouring the RGBA8 layer holds (0 = not coloured yet)
    bool stale = false;           // rows it covers have changed: drawn until its replacement arrives
    uint64_t contents = 0;        // which upload filled the slot (a replacement keeps slot and key)
};

// A colour stamp no range has: the tile's colours are from its previous contents (kept on screen
// while it is recoloured).
constexpr uint64_t kStaleColorStamp = ~uint64_t(0);

struct TileCacheOptions {
    uint64_t budget_bytes = 256ull << 20;
    int workers = 0;          // producer threads; 0 = hardware threads
    int staging_tiles = 32;   // tiles the staging ring holds between a producer and an upload
    bool low_priority_workers = true;  // nice the producers so rendering keeps its frame rate
};

struct TileCacheStats {
    uint64_t produced = 0;    // tiles computed by producers
    uint64_t uploaded = 0;
    uint64_t evicted = 0;
    uint64_t cancelled = 0;   // pending requests dropped by a newer request()
    uint64_t dropped = 0;     // arrivals with no slot free (budget smaller than the visible set)
    double produce_seconds = 0;  // summed over producers
};

class TileCache {
public:
    static constexpr int kEdge = Tile::kEdge;
    static constexpr uint64_t kRawBytes = uint64_t(kEdge) * kEdge * sizeof(float);
    static constexpr uint64_t kColorBytes = uint64_t(kEdge) * kEdge * 4;
    static constexpr uint64_t kSlotBytes = kRawBytes + kColorBytes;

    TileCache(VulkanContext& context, const CpuTileSource& source, const TileCacheOptions& options = {});
    ~TileCache();
    TileCache(const TileCache&) = delete;
    TileCache& operator=(const TileCache&) = delete;

    // Replaces the pending requests with `keys`, most urgent first. Keys already resident, being
    // computed or waiting in staging are skipped; pending keys not in the list are cancelled.
    void request(std::span<const TileKey> keys);
    // Main thread: copies up to max_uploads finished tiles from staging into free (or LRU) slots,
    // recording the copies into cmd. Staging space is reused after frame_complete().
    std::vector<TileKey> upload_arrivals(VkCommandBuffer cmd, uint64_t frame, size_t max_uploads);
    void frame_complete();

    CachedTile* find(const TileKey& key);
    void touch(CachedTile& tile, uint64_t frame) { tile.last_used_frame = frame; }
    // The nearest resident (and coloured, if require_colored) ancestor within max_generations.
    std::optional<std::pair<TileKey, CachedTile*>> nearest_ancestor(const TileKey& key, int max_generations,
                                                                    bool require_colored);

    bool busy() const;  // requests pending, being computed or waiting for upload
    // The matrix grew (live decoding): tiles covering query rows >= first_row are recomputed. They
    // stay on screen until their replacement arrives; tiles computed from the old data are dropped.
    void invalidate_rows_from(int64_t first_row);
    uint32_t capacity_slots() const { return capacity_; }
    size_t resident_tiles() const { return resident_.size(); }
    uint64_t gpu_bytes() const { return raw_.bytes + color_.bytes + staging_.size; }
    uint64_t resident_bytes() const { return resident_.size() * kSlotBytes; }
    TileCacheStats stats() const;

    const GpuImage& raw_array() const { return raw_; }
    const GpuImage& color_array() const { return color_; }

private:
    struct Arrival {
        TileKey key;
        uint32_t staging_index;
        int valid_rows, valid_cols;
        float max_value, min_positive;
        uint64_t epoch;  // data epoch when its computation started
    };
    bool outdated(const TileKey& key, uint64_t epoch) const;  // mutex_ held
    void producer_loop();
    std::optional<uint32_t> take_slot(uint64_t frame);

    VulkanContext& context_;
    const CpuTileSource& source_;
    TileCacheOptions options_;
    uint32_t capacity_ = 0;

    GpuImage raw_, color_;
    GpuBuffer staging_;

    // Main-thread state.
    std::unordered_map<TileKey, CachedTile, TileKeyHash> resident_;
    std::vector<uint32_t> free_slots_;
    std::vector<uint32_t> staging_to_release_;
    std::vector<TileKey> slot_owner_;
    uint64_t uploads_ = 0;

    // Shared with producers (mutex_).
    mutable std::mutex mutex_;
    std::condition_variable work_ready_, staging_free_;
    std::deque<TileKey> pending_;
    std::vector<TileKey> in_flight_;
    std::vector<Arrival> arrivals_;
    std::vector<uint32_t> free_staging_;
    TileCacheStats stats_;
    uint64_t epoch_ = 0;
    std::deque<std::pair<uint64_t, int64_t>> invalidations_;  // (epoch it started, first row), recent ones
    bool stopping_ = false;
    std::vector<std::thread> workers_;
    int blas_threads_before_ = 1;
};

}  // namespace attn::render
