#include "ui/cli/dp_options.h"

#include <cstdio>
#include <random>

#include "engine/error.h"

namespace attn::cli {

void DpOptions::add_to(CLI::App* c, const std::string& what) {
    c->add_option("--dp", mechanism, "Add differential-privacy noise to " + what + ": laplace or gaussian")
        ->check(CLI::IsMember({"laplace", "gaussian"}));
    c->add_option("--epsilon", epsilon, "Privacy budget epsilon of --dp");
    c->add_option("--delta", delta, "delta of --dp gaussian");
    c->add_option("--sensitivity", sensitivity,
                  "Sensitivity of the released values to one person's data for --dp (L1 norm for laplace, L2 for gaussian)");
    c->add_option_function<uint64_t>(
        "--dp-seed", [this](uint64_t value) { seed = value, seed_set = true; },
        "Fix the noise seed (reproducible; otherwise random; never recorded, masked in the command line)");
}

std::optional<DpParams> DpOptions::params() const {
    if (mechanism.empty()) {
        if (epsilon > 0 || delta > 0 || sensitivity > 0 || seed_set)
            fail("--epsilon, --delta, --sensitivity and --dp-seed need --dp laplace|gaussian");
        return std::nullopt;
    }
    DpParams params;
    params.mechanism = mechanism == "gaussian" ? DpMechanism::Gaussian : DpMechanism::Laplace;
    if (!(epsilon > 0)) fail("--dp needs --epsilon E (> 0)");
    if (!(sensitivity > 0)) fail("--dp needs --sensitivity S (> 0): how much one person's data can change a value");
    params.epsilon = epsilon;
    params.sensitivity = sensitivity;
    if (params.mechanism == DpMechanism::Gaussian) {
        if (!(delta > 0)) fail("--dp gaussian needs --delta D (in (0, 1))");
        params.delta = delta;
    } else if (delta > 0) {
        fail("--delta is for --dp gaussian (the Laplace mechanism is pure epsilon-DP)");
    }
    // The seed is secret unless the user fixes it (for a reproducible test); it is never recorded.
    params.seed = seed_set ? seed : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
    (void)dp_noise_parameters(params);  // checks the parameters before any work
    return params;
}

void print_dp_notice(const DpNoiseReport& noise) {
    std::fprintf(stderr, "differential privacy: %s noise, epsilon %g%s, sensitivity %g: scale %g (std %g) per value\n",
                 noise.mechanism.c_str(), noise.epsilon,
                 noise.mechanism == "gaussian" ? cat(", delta ", noise.delta).c_str() : "", noise.sensitivity,
                 noise.scale, noise.stddev);
}

}  // namespace attn::cli
