#pragma once
// The differential-privacy options shared by the commands that export attention values (`tile`,
// `audit`): --dp laplace|gaussian --epsilon E [--delta D] --sensitivity S [--dp-seed N].
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "engine/pii.h"

namespace attn::cli {

struct DpOptions {
    std::string mechanism;
    double epsilon = 0, delta = 0, sensitivity = 0;
    uint64_t seed = 0;
    bool seed_set = false;

    // Registers the options on `command`; `what` says what receives the noise (for --help).
    void add_to(CLI::App* command, const std::string& what);
    // nullopt without --dp; attn::Error naming the option on a missing or out-of-range parameter.
    // The seed is random unless --dp-seed fixes it; it is never recorded.
    std::optional<DpParams> params() const;
};

// "differential privacy: laplace noise, epsilon 1, sensitivity 0.1: scale 0.1 (std 0.141) per value" on stderr.
void print_dp_notice(const DpNoiseReport& noise);

}  // namespace attn::cli
