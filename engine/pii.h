#pragma once
// Personal data in text, and privacy for exports (issue 7, "Privacy").
//
// Detection works on UTF-8 bytes and returns byte spans [begin, end) into the text, sorted and
// non-overlapping, each with a type:
//   ResidentId  mainland China resident identity number (GB 11643-1999): 17 digits and a check
//               character 0-9 or X (ISO 7064 MOD 11-2: weights 2^(17-i) mod 11, check =
//               (12 - Σ mod 11) mod 11, 10 written X), a known province code (11-15, 21-23,
//               31-37, 41-46, 50-54, 61-65, 71, 81-83) and a real birth date YYYYMMDD between
//               1900-01-01 and today. Written whole or as 6-8-4 groups.
//   Phone       mainland mobile number 1[3-9]d{9}, optionally after +86 / 0086 / 86, written whole
//               or as 3-4-4 groups separated by spaces or dashes.
//   BankCard    13–19 digits passing the Luhn check, whole or in groups of 4 (the last 1–4 long)
//               or the 4-6-5 / 4-6-4 layouts, separated consistently by spaces or dashes.
//   Email       local@domain: local part [A-Za-z0-9._%+-], domain of at least two labels and an
//               alphabetic top-level label of two or more letters.
//   Ipv4        dotted quad, each part 0–255.
//   Ipv6        anything inet_pton(AF_INET6) accepts (including ::ffff:1.2.3.4 and ::1).
// A number must stand alone: no ASCII letter or digit right before or after it (Chinese text
// around it is fine: "身份证号110101199003071234的"), and it must not be part of a decimal
// number, version or address ("3.14159…", "1.2.3.4"). Numbers that have a layout of one of the
// types but fail its checksum or plausibility check are not matched, and nothing inside them is.
// When spans of different types overlap, the earlier type in this list wins: Email, Ipv6, Ipv4,
// ResidentId, Phone, BankCard (an e-mail address made of a phone number is one Email span).
//
// Masking renders each span as "●●●● [TYPE]" (TYPE: ID, PHONE, CARD, EMAIL, IPv4, IPv6) for
// display and export; the model still sees the original text. token_pii_mask tells views which
// token positions overlap personal data so that token labels can be shown as ●●●●. Masking is on
// by default (privacy_defaults()); a user may switch it off for a process.
//
// Differential privacy for exported attention values: the Laplace mechanism (ε-DP, noise scale
// b = Δ/ε, standard deviation √2·b) and the Gaussian mechanism ((ε, δ)-DP; σ from the analytic
// calibration of Balle & Wang 2018 by default, or the classic σ = Δ·√(2 ln(1.25/δ))/ε, valid for
// ε < 1). Noise comes from a std::mt19937_64 seeded by the caller, turned into Laplace (inverse
// CDF) and Gaussian (Box–Muller) values by our own code, so a seed gives the same noise on every
// standard library. The report states the mechanism, ε, δ, Δ and the scale — never the seed,
// which would let anyone subtract the noise.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"

namespace attn {

enum class PiiType { ResidentId, Phone, BankCard, Email, Ipv4, Ipv6 };

struct PiiSpan {
    size_t begin = 0, end = 0;  // bytes of the text
    PiiType type = PiiType::Email;

    bool operator==(const PiiSpan&) const = default;
};

const char* pii_type_label(PiiType type);  // "ID", "PHONE", "CARD", "EMAIL", "IPv4", "IPv6"
const char* pii_type_name(PiiType type);   // "resident_id", "phone", "bank_card", "email", "ipv4", "ipv6"

// The mask drawn in place of personal data.
inline constexpr std::string_view kPiiMaskGlyph = "●●●●";

// Sorted, non-overlapping spans of every kind of personal data above.
std::vector<PiiSpan> find_pii(std::string_view text);

// `text` with each span replaced by "●●●● [TYPE]".
std::string mask_pii(std::string_view text, const std::vector<PiiSpan>& spans);
std::string mask_pii(std::string_view text);  // find_pii + mask
// Bytes [begin, end) of `text` as displayed: every span that overlaps them, even partly, becomes
// one "●●●● [TYPE]" (a piece of a span is still personal data). `spans` as find_pii(text) returns them.
std::string mask_pii_range(std::string_view text, size_t begin, size_t end, const std::vector<PiiSpan>& spans);
// `text` masked only when privacy_defaults().mask_pii is on.
std::string mask_pii_if_enabled(std::string_view text);

// Per token: the index of the first PII span its byte span overlaps, or -1. Tokens with an empty
// span (BOS) overlap nothing. `spans` sorted and non-overlapping (as find_pii returns them).
std::vector<int> token_pii_spans(std::span<const Token> tokens, const std::vector<PiiSpan>& spans);
// Per token: whether it overlaps personal data (its label should be drawn as ●●●●).
std::vector<bool> token_pii_mask(std::span<const Token> tokens, const std::vector<PiiSpan>& spans);
std::vector<bool> token_pii_mask(std::span<const Token> tokens, std::string_view text);

// Checks used by the detector (exposed for tests and for validating user input).
bool luhn_valid(std::string_view digits);                       // digits only, at least 2
char resident_id_check_char(std::string_view first17);          // '0'-'9' or 'X'; 0 if not 17 digits
bool resident_id_valid(std::string_view id);                    // 18 chars, full check as above

// ---- Process-wide privacy setting -------------------------------------------------------------

struct PrivacySettings {
    bool mask_pii = true;  // on by default: displays and exports show ●●●● [TYPE]
};
PrivacySettings privacy_defaults();                       // thread-safe
void set_privacy_defaults(const PrivacySettings& settings);

// ---- Differential privacy ----------------------------------------------------------------------

enum class DpMechanism { Laplace, Gaussian };
enum class GaussianCalibration { Analytic, Classic };

struct DpParams {
    DpMechanism mechanism = DpMechanism::Laplace;
    double epsilon = 1.0;      // > 0
    double delta = 1e-5;       // Gaussian only, in (0, 1)
    double sensitivity = 1.0;  // Δ: L1 (Laplace) or L2 (Gaussian) sensitivity of the released values, > 0
    GaussianCalibration calibration = GaussianCalibration::Analytic;
    uint64_t seed = 0;         // of the noise; keep it secret (it is not written to reports)
    bool clamp_to_unit = false;  // clip noisy values to [0, 1] afterwards (post-processing keeps the guarantee)
};

// What a report states about the noise added.
struct DpNoiseReport {
    std::string mechanism;    // "laplace" or "gaussian"
    double epsilon = 0, delta = 0, sensitivity = 0;
    double scale = 0;         // Laplace b = Δ/ε; Gaussian σ
    double stddev = 0;        // of each noise value: √2·b or σ
    std::string calibration;  // how the scale follows from ε, δ, Δ (a formula, in words)
    uint64_t values = 0;      // how many values received noise
    bool clamped = false;
};

// Throws attn::Error on out-of-range parameters (naming the parameter).
double laplace_scale(double epsilon, double sensitivity);
double gaussian_sigma(double epsilon, double delta, double sensitivity,
                      GaussianCalibration calibration = GaussianCalibration::Analytic);
DpNoiseReport dp_noise_parameters(const DpParams& params);
// Adds independent noise to every value and returns what was done.
DpNoiseReport add_dp_noise(std::span<float> values, const DpParams& params);

}  // namespace attn
