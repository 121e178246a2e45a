#pragma once
// Synthetic sessions for tests and benchmarks: a CaptureStore built in-process whose attention has
// the structure real heads show — a sink column on key 0, a previous-token diagonal, local bands
// and induction-like stripes parallel to the diagonal — with LSE and the pooled overview computed
// exactly for the Q and K generated, so CpuTileSource rows sum to 1 and tiles are exact.
//
// How it stays cheap at 50,000 tokens: every key is a rotation k_j = (cos ω_f j, sin ω_f j) per
// frequency ω_f = π / 2^f (f = 0..15), queries carry per-head amplitudes and phases, so the score
// q_i·k_j = g_h(i − j) depends only on the offset (RoPE-style relative attention); one extra
// dimension is set only for key 0 (the sink). Then Σ_j exp(score) is a prefix sum over offsets plus
// one correction for key 0: LSE is O(N) and the overview O(N²/128) per head, with no N² pass.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/session.h"

namespace attn::view {

enum class SyntheticPattern {
    PreviousToken,  // almost all mass on key i−1
    Sink,           // key 0 takes most of the mass; the rest is uniform
    Induction,      // stripes every `stripe_period` tokens below the diagonal, plus a sink
    LocalBand,      // a soft band of recent keys
};

struct SyntheticOptions {
    int64_t tokens = 4096;
    int layers = 1;
    std::vector<SyntheticPattern> heads{SyntheticPattern::PreviousToken, SyntheticPattern::Sink,
                                        SyntheticPattern::Induction, SyntheticPattern::LocalBand};
    int stripe_period = 512;  // power of two, for Induction
    int64_t decode_steps = 0;  // the last positions are decode steps (one StepRecord each), for the waterfall
};

const char* pattern_name(SyntheticPattern pattern);

// The session's tokens are words "w<position>" separated by spaces; config/identity name the
// synthetic shape. Layers repeat the head patterns (layer l shifts the pattern list by l).
Session make_synthetic_session(const SyntheticOptions& options);

}  // namespace attn::view
