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
    overview_.resize(static_cast<size_t>(shape.n_layer) * shape.n_head);
}

void CaptureStore::record_layer(int layer, int64_t pos0, int64_t n, const float* q, const float* k,
                                const float* lse) {
    if (layer < 0 || layer >= shape_.n_layer) fail("capture: layer ", layer, " out of range");
    LayerChunks& chunks = layers_[layer];
    if (pos0 != chunks.recorded)
        fail("capture: layer ", layer, " expected position ", chunks.recorded, ", got ", pos0);
    const int64_t q_row = int64_t(shape_.n_head) * shape_.head_dim;
    const int64_t k_row = int64_t(shape_.n_kv_head) * shape_.head_dim;
    int64_t done = 0;
    while (done < n) {
        const int64_t pos = pos0 + done;
        const size_t chunk = pos / kChunkPositions;
        const int64_t offset = pos % kChunkPositions;
        if (chunk == chunks.q.size()) {
            chunks.q.emplace_back(new float[kChunkPositions * q_row]);
            chunks.k.emplace_back(new float[kChunkPositions * k_row]);
            chunks.lse.emplace_back(new float[kChunkPositions * shape_.n_head]);
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
    positions_ = complete;
}

void CaptureStore::grow_overview(Overview& ov, int64_t query) const {
    const int64_t blocks = query / kOverviewBlock + 1;
    const size_t needed = static_cast<size_t>(tri_index(blocks, 0));
    if (ov.sum.size() < needed) {
        ov.sum.resize(needed, 0.f);
        ov.max.resize(needed, 0.f);
    }
}

void CaptureStore::prepare_overview(int64_t positions) {
    if (positions <= 0) return;
    for (Overview& ov : overview_) grow_overview(ov, positions - 1);
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
        const int64_t index = tri_index(qb, k0 / kOverviewBlock);
        ov.sum[index] += block_sum;
        ov.max[index] = std::max(ov.max[index], block_max);
    }
    ++overview_rows_;
}

void CaptureStore::truncate(int64_t positions) {
    if (positions >= positions_) return;
    for (LayerChunks& chunks : layers_) {
        chunks.recorded = std::min(chunks.recorded, positions);
        const size_t keep = static_cast<size_t>((positions + kChunkPositions - 1) / kChunkPositions);
        chunks.q.resize(std::min(chunks.q.size(), keep));
        chunks.k.resize(std::min(chunks.k.size(), keep));
        chunks.lse.resize(std::min(chunks.lse.size(), keep));
    }
    positions_ = positions;
    // Overview blocks that include dropped rows can't be un-summed: clear them entirely and let
    // the owner re-accumulate the surviving rows (rebuild_overview) if it needs them.
    clear_overview();
}

void CaptureStore::clear_overview() {
    for (Overview& ov : overview_) {
        ov.sum.clear();
        ov.max.clear();
    }
    overview_rows_ = 0;
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
    return (positions_ + kOverviewBlock - 1) / kOverviewBlock;
}

float CaptureStore::overview_sum(int layer, int head, int64_t qb, int64_t kb) const {
    const Overview& ov = overview_[static_cast<size_t>(layer) * shape_.n_head + head];
    const int64_t index = tri_index(qb, kb);
    return kb <= qb && index < static_cast<int64_t>(ov.sum.size()) ? ov.sum[index] : 0.f;
}

float CaptureStore::overview_max(int layer, int head, int64_t qb, int64_t kb) const {
    const Overview& ov = overview_[static_cast<size_t>(layer) * shape_.n_head + head];
    const int64_t index = tri_index(qb, kb);
    return kb <= qb && index < static_cast<int64_t>(ov.max.size()) ? ov.max[index] : 0.f;
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
    Overview& ov = overview_[static_cast<size_t>(layer) * shape_.n_head + head];
    const bool had_rows = !ov.sum.empty();
    ov.sum.assign(sums.begin(), sums.end());
    ov.max.assign(maxes.begin(), maxes.end());
    if (!had_rows) overview_rows_ += static_cast<uint64_t>(positions_);
}

uint64_t CaptureStore::bytes_held() const {
    const uint64_t per_chunk = uint64_t(kChunkPositions) *
                               (uint64_t(shape_.n_head) * shape_.head_dim + uint64_t(shape_.n_kv_head) * shape_.head_dim +
                                shape_.n_head) * sizeof(float);
    uint64_t total = 0;
    for (const LayerChunks& chunks : layers_) total += chunks.q.size() * per_chunk;
    for (const Overview& ov : overview_) total += (ov.sum.capacity() + ov.max.capacity()) * sizeof(float);
    return total;
}

}  // namespace attn
