#include "engine/capture_store.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"

namespace attn {

CaptureStore::CaptureStore(const CaptureShape& shape) : shape_(shape) {
    if (shape.n_layer <= 0 || shape.n_head <= 0 || shape.n_kv_head <= 0 || shape.head_dim <= 0 ||
        shape.n_head % shape.n_kv_head != 0)
        fail("capture shape is invalid: ", shape.n_layer, " layers, ", shape.n_head, " heads, ",
             shape.n_kv_head, " kv heads, head dim ", shape.head_dim);
    layers_.resize(shape.n_layer);
    for (LayerChunks& chunks : layers_) {
        chunks.q = std::make_unique<std::unique_ptr<float[]>[]>(kMaxChunks);
        chunks.k = std::make_unique<std::unique_ptr<float[]>[]>(kMaxChunks);
        chunks.lse = std::make_unique<std::unique_ptr<float[]>[]>(kMaxChunks);
    }
    overview_.resize(static_cast<size_t>(shape.n_layer) * shape.n_head);
}

void CaptureStore::record_layer(int layer, int64_t pos0, int64_t n, const float* q, const float* k,
                                const float* lse) {
    if (layer < 0 || layer >= shape_.n_layer) fail("capture: layer ", layer, " out of range");
    LayerChunks& chunks = layers_[layer];
    if (pos0 != chunks.recorded)
        fail("capture: layer ", layer, " expected position ", chunks.recorded, ", got ", pos0);
    if (pos0 + n > kMaxPositions)
        fail("capture: ", pos0 + n, " positions exceed the capture store's limit of ", kMaxPositions);
    const int64_t q_row = int64_t(shape_.n_head) * shape_.head_dim;
    const int64_t k_row = int64_t(shape_.n_kv_head) * shape_.head_dim;
    int64_t done = 0;
    while (done < n) {
        const int64_t pos = pos0 + done;
        const size_t chunk = pos / kChunkPositions;
        const int64_t offset = pos % kChunkPositions;
        if (static_cast<int64_t>(chunk) == chunks.allocated) {
            chunks.q[chunk].reset(new float[kChunkPositions * q_row]);
            chunks.k[chunk].reset(new float[kChunkPositions * k_row]);
            chunks.lse[chunk].reset(new float[kChunkPositions * shape_.n_head]);
            ++chunks.allocated;
        }
        const int64_t take = std::min(n - done, kChunkPositions - offset);
        std::memcpy(chunks.q[chunk].get() + offset * q_row, q + done * q_row, take * q_row * sizeof(float));
        std::memcpy(chunks.k[chunk].get() + offset * k_row, k + done * k_row, take * k_row * sizeof(float));
        std::memcpy(chunks.lse[chunk].get() + offset * shape_.n_head, lse + done * shape_.n_head,
                    take * shape_.n_head * sizeof(float));
        done += take;
    }
    chunks.recorded += n;
    update_complete_positions();
}

void CaptureStore::update_complete_positions() {
    int64_t complete = layers_.empty() ? 0 : layers_[0].recorded;
    for (const LayerChunks& chunks : layers_) complete = std::min(complete, chunks.recorded);
    // Release: a reader that sees the new count sees the chunks and values below it.
    positions_.store(complete, std::memory_order_release);
}

void CaptureStore::grow_overview(Overview& ov, int64_t query) const {
    const int64_t blocks = query / kOverviewBlock + 1;
    const size_t needed = static_cast<size_t>(tri_index(blocks, 0));
    if (ov.sum.size() < needed) {
        std::unique_lock lock(overview_mutex_);
        ov.sum.resize(needed, 0.f);
        ov.max.resize(needed, 0.f);
    }
}

void CaptureStore::prepare_overview(int64_t positions) {
    if (positions <= 0) return;
    const size_t needed = static_cast<size_t>(tri_index((positions - 1) / kOverviewBlock + 1, 0));
    if (!overview_.empty() && overview_.front().sum.size() >= needed) return;
    std::unique_lock lock(overview_mutex_);
    for (Overview& ov : overview_) {
        if (ov.sum.size() < needed) {
            ov.sum.resize(needed, 0.f);
            ov.max.resize(needed, 0.f);
        }
    }
}

void CaptureStore::accumulate_overview(int layer, int head, int64_t query, std::span<const float> probs) {
    Overview& ov = overview_[static_cast<size_t>(layer) * shape_.n_head + head];
    grow_overview(ov, query);
    const int64_t qb = query / kOverviewBlock;
    const int64_t keys = std::min<int64_t>(static_cast<int64_t>(probs.size()), query + 1);
    for (int64_t k0 = 0; k0 < keys; k0 += kOverviewBlock) {
        const int64_t k1 = std::min<int64_t>(keys, k0 + kOverviewBlock);
        float block_sum = 0.f, block_max = 0.f;
        for (int64_t j = k0; j < k1; ++j) {
            block_sum += probs[j];
            block_max = std::max(block_max, probs[j]);
        }
        // One writer per cell; relaxed atomics because readers may look at this block meanwhile.
        const int64_t index = tri_index(qb, k0 / kOverviewBlock);
        std::atomic_ref<float> sum(ov.sum[index]), peak(ov.max[index]);
        sum.store(sum.load(std::memory_order_relaxed) + block_sum, std::memory_order_relaxed);
        peak.store(std::max(peak.load(std::memory_order_relaxed), block_max), std::memory_order_relaxed);
    }
    ++overview_rows_;
}

void CaptureStore::truncate(int64_t positions) {
    if (positions >= this->positions()) return;
    for (LayerChunks& chunks : layers_) {
        chunks.recorded = std::min(chunks.recorded, positions);
        const int64_t keep = (positions + kChunkPositions - 1) / kChunkPositions;
        for (int64_t c = keep; c < chunks.allocated; ++c) {
            chunks.q[c].reset();
            chunks.k[c].reset();
            chunks.lse[c].reset();
        }
        chunks.allocated = std::min(chunks.allocated, keep);
    }
    if (hidden_positions() > positions) {
        hidden_positions_.store(positions, std::memory_order_release);
        const int64_t keep = (positions + kChunkPositions - 1) / kChunkPositions;
        for (int64_t c = keep; c < hidden_allocated_; ++c) hidden_[c].reset();
        hidden_allocated_ = std::min(hidden_allocated_, keep);
    }
    positions_.store(positions, std::memory_order_release);
    // Overview blocks that include dropped rows can't be un-summed: clear them entirely and let
    // the owner re-accumulate the surviving rows (rebuild_overview) if it needs them.
    clear_overview();
}

void CaptureStore::clear_overview() {
    std::unique_lock lock(overview_mutex_);
    for (Overview& ov : overview_) {
        ov.sum.clear();
        ov.max.clear();
    }
    overview_rows_ = 0;
}

int64_t CaptureStore::copy_prefix_from(const CaptureStore& source, int64_t positions) {
    if (!(source.shape() == shape_)) fail("capture: copying a prefix between stores of different shapes");
    if (this->positions() != 0) fail("capture: copying a prefix into a store that already holds positions");
    if (positions < 0 || positions > source.positions())
        fail("capture: prefix of ", positions, " positions, the source holds ", source.positions());
    const int64_t q_row = int64_t(shape_.n_head) * shape_.head_dim, k_row = int64_t(shape_.n_kv_head) * shape_.head_dim;
    std::vector<float> q(q_row * kChunkPositions), k(k_row * kChunkPositions), lse(int64_t(shape_.n_head) * kChunkPositions);
    for (int layer = 0; layer < shape_.n_layer; ++layer)
        for (int64_t p0 = 0; p0 < positions; p0 += kChunkPositions) {
            const int64_t n = std::min<int64_t>(kChunkPositions, positions - p0);
            source.copy_q(layer, p0, n, q.data());
            source.copy_k(layer, p0, n, k.data());
            source.copy_lse(layer, p0, n, lse.data());
            record_layer(layer, p0, n, q.data(), k.data(), lse.data());
        }
    const int64_t hidden = std::min(positions, source.hidden_positions());
    if (hidden > 0) {
        std::vector<float> rows(size_t(source.hidden_width()) * kChunkPositions);
        for (int64_t p0 = 0; p0 < hidden; p0 += kChunkPositions) {
            const int64_t n = std::min<int64_t>(kChunkPositions, hidden - p0);
            source.copy_hidden(p0, n, rows.data());
            record_hidden(p0, n, source.hidden_width(), rows.data());
        }
    }
    const int64_t whole_blocks = positions / kOverviewBlock;
    if (whole_blocks > 0 && source.overview_blocks() >= whole_blocks) {
        std::shared_lock source_lock(source.overview_mutex_);
        std::unique_lock lock(overview_mutex_);
        const size_t cells = static_cast<size_t>(tri_index(whole_blocks, 0));
        for (size_t i = 0; i < overview_.size(); ++i) {
            const Overview& from = source.overview_[i];
            if (from.sum.size() < cells) fail("capture: the source's overview does not cover its positions");
            overview_[i].sum.assign(from.sum.begin(), from.sum.begin() + cells);
            overview_[i].max.assign(from.max.begin(), from.max.begin() + cells);
        }
        overview_rows_ = static_cast<uint64_t>(whole_blocks * kOverviewBlock) * shape_.n_layer * shape_.n_head;
        return whole_blocks * kOverviewBlock;
    }
    return 0;
}

void CaptureStore::record_hidden(int64_t pos0, int64_t n, int width, const float* hidden) {
    if (width <= 0) fail("capture: hidden states of width ", width);
    const int known = hidden_width();
    if (known != 0 && known != width)
        fail("capture: hidden states of width ", width, ", the store holds width ", known);
    if (pos0 != hidden_positions())
        fail("capture: hidden states expected from position ", hidden_positions(), ", got ", pos0);
    if (n < 0 || pos0 + n > positions())
        fail("capture: hidden states up to position ", pos0 + n, " but only ", positions(), " positions are captured");
    if (!hidden_) hidden_ = std::make_unique<std::unique_ptr<float[]>[]>(kMaxChunks);
    int64_t done = 0;
    while (done < n) {
        const int64_t pos = pos0 + done;
        const int64_t chunk = pos / kChunkPositions, offset = pos % kChunkPositions;
        if (chunk == hidden_allocated_) {
            hidden_[chunk].reset(new float[kChunkPositions * int64_t(width)]);
            ++hidden_allocated_;
        }
        const int64_t take = std::min(n - done, kChunkPositions - offset);
        std::memcpy(hidden_[chunk].get() + offset * width, hidden + done * width, take * width * sizeof(float));
        done += take;
    }
    hidden_width_.store(width, std::memory_order_release);
    // Release: a reader that sees the new count sees the chunk table and the values below it.
    hidden_positions_.store(pos0 + n, std::memory_order_release);
}

const float* CaptureStore::hidden(int64_t pos) const {
    return hidden_[pos / kChunkPositions].get() + (pos % kChunkPositions) * int64_t(hidden_width());
}

const float* CaptureStore::q(int layer, int64_t pos) const {
    const int64_t row = int64_t(shape_.n_head) * shape_.head_dim;
    return layers_[layer].q[pos / kChunkPositions].get() + (pos % kChunkPositions) * row;
}

const float* CaptureStore::k(int layer, int64_t pos) const {
    const int64_t row = int64_t(shape_.n_kv_head) * shape_.head_dim;
    return layers_[layer].k[pos / kChunkPositions].get() + (pos % kChunkPositions) * row;
}

float CaptureStore::lse(int layer, int64_t pos, int head) const {
    return layers_[layer].lse[pos / kChunkPositions][(pos % kChunkPositions) * shape_.n_head + head];
}

int64_t CaptureStore::overview_blocks() const {
    return (positions() + kOverviewBlock - 1) / kOverviewBlock;
}

namespace {
float read_cell(const std::vector<float>& cells, int64_t index) {
    if (index >= static_cast<int64_t>(cells.size())) return 0.f;
    return std::atomic_ref<const float>(cells[index]).load(std::memory_order_relaxed);
}
}  // namespace

CaptureStore::OverviewReader::OverviewReader(const CaptureStore& store, int layer, int head)
    : lock_(store.overview_mutex_),
      sum_(&store.overview_[static_cast<size_t>(layer) * store.shape_.n_head + head].sum),
      max_(&store.overview_[static_cast<size_t>(layer) * store.shape_.n_head + head].max) {}

float CaptureStore::OverviewReader::sum(int64_t qb, int64_t kb) const {
    return kb <= qb ? read_cell(*sum_, tri_index(qb, kb)) : 0.f;
}

float CaptureStore::OverviewReader::max(int64_t qb, int64_t kb) const {
    return kb <= qb ? read_cell(*max_, tri_index(qb, kb)) : 0.f;
}

float CaptureStore::overview_sum(int layer, int head, int64_t qb, int64_t kb) const {
    return overview_reader(layer, head).sum(qb, kb);
}

float CaptureStore::overview_max(int layer, int head, int64_t qb, int64_t kb) const {
    return overview_reader(layer, head).max(qb, kb);
}

namespace {
template <typename RowPointer>
void copy_rows(int64_t pos0, int64_t n, int64_t row, float* out, RowPointer row_at) {
    int64_t done = 0;
    while (done < n) {
        const int64_t pos = pos0 + done;
        const int64_t take = std::min(n - done, CaptureStore::kChunkPositions - pos % CaptureStore::kChunkPositions);
        std::memcpy(out + done * row, row_at(pos), take * row * sizeof(float));
        done += take;
    }
}
}  // namespace

void CaptureStore::copy_q(int layer, int64_t pos0, int64_t n, float* out) const {
    copy_rows(pos0, n, int64_t(shape_.n_head) * shape_.head_dim, out, [&](int64_t p) { return q(layer, p); });
}

void CaptureStore::copy_k(int layer, int64_t pos0, int64_t n, float* out) const {
    copy_rows(pos0, n, int64_t(shape_.n_kv_head) * shape_.head_dim, out, [&](int64_t p) { return k(layer, p); });
}

void CaptureStore::copy_lse(int layer, int64_t pos0, int64_t n, float* out) const {
    copy_rows(pos0, n, shape_.n_head, out, [&](int64_t p) {
        return layers_[layer].lse[p / kChunkPositions].get() + (p % kChunkPositions) * shape_.n_head;
    });
}

void CaptureStore::copy_hidden(int64_t pos0, int64_t n, float* out) const {
    if (pos0 < 0 || n < 0 || pos0 + n > hidden_positions())
        fail("capture: hidden states [", pos0, ", ", pos0 + n, ") requested, ", hidden_positions(), " recorded");
    copy_rows(pos0, n, hidden_width(), out, [&](int64_t p) { return hidden(p); });
}

std::span<const float> CaptureStore::overview_sums(int layer, int head) const {
    return overview_[static_cast<size_t>(layer) * shape_.n_head + head].sum;
}

std::span<const float> CaptureStore::overview_maxes(int layer, int head) const {
    return overview_[static_cast<size_t>(layer) * shape_.n_head + head].max;
}

void CaptureStore::restore_overview(int layer, int head, std::span<const float> sums, std::span<const float> maxes) {
    const size_t expected = static_cast<size_t>(tri_index(overview_blocks(), 0));
    if (sums.size() != expected || maxes.size() != expected)
        fail("overview for layer ", layer, " head ", head, " has ", sums.size(), " blocks, expected ", expected);
    std::unique_lock lock(overview_mutex_);
    Overview& ov = overview_[static_cast<size_t>(layer) * shape_.n_head + head];
    const bool had_rows = !ov.sum.empty();
    ov.sum.assign(sums.begin(), sums.end());
    ov.max.assign(maxes.begin(), maxes.end());
    if (!had_rows) overview_rows_ += static_cast<uint64_t>(positions());
}

void CaptureStore::replace_overview_rows(int64_t first_block, const float* sums, const float* maxes, int64_t stride) {
    const int64_t blocks = overview_blocks();
    if (first_block < 0 || first_block > blocks)
        fail("overview: block row ", first_block, " is outside the ", blocks, " block rows captured");
    const int64_t e0 = tri_index(first_block, 0), e1 = tri_index(blocks, 0);
    if (stride < e1) fail("overview: ", stride, " entries per head cannot hold ", blocks, " block rows");
    std::unique_lock lock(overview_mutex_);
    for (size_t i = 0; i < overview_.size(); ++i) {
        Overview& ov = overview_[i];
        if (static_cast<int64_t>(ov.sum.size()) < e0)
            fail("overview: block rows below ", first_block, " are missing; replace from an earlier block row");
        ov.sum.resize(static_cast<size_t>(e1), 0.f);
        ov.max.resize(static_cast<size_t>(e1), 0.f);
        std::copy(sums + int64_t(i) * stride + e0, sums + int64_t(i) * stride + e1, ov.sum.begin() + e0);
        std::copy(maxes + int64_t(i) * stride + e0, maxes + int64_t(i) * stride + e1, ov.max.begin() + e0);
    }
    overview_rows_ = static_cast<uint64_t>(positions()) * shape_.n_layer * shape_.n_head;
}

uint64_t CaptureStore::bytes_held() const {
    const uint64_t per_chunk = uint64_t(kChunkPositions) *
                               (uint64_t(shape_.n_head) * shape_.head_dim + uint64_t(shape_.n_kv_head) * shape_.head_dim +
                                shape_.n_head) * sizeof(float);
    uint64_t total = 0;
    for (const LayerChunks& chunks : layers_) total += chunks.allocated * per_chunk;
    total += uint64_t(hidden_allocated_) * kChunkPositions * uint64_t(hidden_width()) * sizeof(float);
    std::shared_lock lock(overview_mutex_);
    for (const Overview& ov : overview_) total += (ov.sum.capacity() + ov.max.capacity()) * sizeof(float);
    return total;
}

}  // namespace attn
