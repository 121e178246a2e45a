#include "engine/pii.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <iterator>
#include <mutex>
#include <random>

#include "engine/error.h"

namespace attn {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// ---- Numbers: resident IDs, phones, bank cards ---------------------------------------------------

// A run of digits in a number candidate; groups are joined by single spaces or dashes.
struct Group {
    size_t begin = 0, end = 0;  // bytes, including a leading '+' and a trailing X
    std::string digits;         // digits only (the X is in has_x)
    bool plus = false;          // starts with '+'
    bool has_x = false;         // ends with X/x (only a resident ID's check character)
    char separator_before = 0;  // ' ' or '-' (0 for the first group)
};

struct Today {
    int year, month, day;
};

Today today_utc() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    return {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday};
}

int to_int(std::string_view digits) {
    int value = 0;
    for (char c : digits) value = value * 10 + (c - '0');
    return value;
}

bool plausible_birth_date(std::string_view yyyymmdd) {
    const int year = to_int(yyyymmdd.substr(0, 4));
    const int month = to_int(yyyymmdd.substr(4, 2));
    const int day = to_int(yyyymmdd.substr(6, 2));
    if (year < 1900 || month < 1 || month > 12 || day < 1) return false;
    static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const int days = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
    if (day > days) return false;
    const Today today = today_utc();
    // A birth date may be today at the latest (a day's slack for time zones east of UTC).
    const long born = long(year) * 10000 + month * 100 + day;
    const long limit = long(today.year) * 10000 + today.month * 100 + today.day + 1;
    return born <= limit;
}

bool known_province(int code) {
    return (code >= 11 && code <= 15) || (code >= 21 && code <= 23) || (code >= 31 && code <= 37) ||
           (code >= 41 && code <= 46) || (code >= 50 && code <= 54) || (code >= 61 && code <= 65) || code == 71 ||
           (code >= 81 && code <= 83);
}

std::string joined_digits(const std::vector<Group>& groups, size_t first, size_t last) {
    std::string digits;
    for (size_t g = first; g < last; ++g) digits += groups[g].digits;
    return digits;
}

bool any_plus(const std::vector<Group>& groups, size_t first, size_t last) {
    for (size_t g = first; g < last; ++g)
        if (groups[g].plus) return true;
    return false;
}
bool any_x(const std::vector<Group>& groups, size_t first, size_t last) {
    for (size_t g = first; g < last; ++g)
        if (groups[g].has_x) return true;
    return false;
}
bool consistent_separators(const std::vector<Group>& groups, size_t first, size_t last) {
    for (size_t g = first + 2; g < last; ++g)
        if (groups[g].separator_before != groups[first + 1].separator_before) return false;
    return true;
}

enum class Verdict { NoLayout, Invalid, Valid };

// 17 digits + check in one group, or 6-8-4 groups (the last may end in X).
Verdict classify_resident_id(const std::vector<Group>& groups, size_t first, size_t last) {
    const size_t count = last - first;
    if (any_plus(groups, first, last)) return Verdict::NoLayout;
    for (size_t g = first; g + 1 < last; ++g)
        if (groups[g].has_x) return Verdict::NoLayout;
    std::string id = joined_digits(groups, first, last);
    if (groups[last - 1].has_x) id += 'X';
    if (id.size() != 18) return Verdict::NoLayout;
    const bool whole = count == 1;
    const bool grouped = count == 3 && groups[first].digits.size() == 6 && groups[first + 1].digits.size() == 8 &&
                         groups[first + 2].digits.size() + (groups[first + 2].has_x ? 1 : 0) == 4 &&
                         consistent_separators(groups, first, last);
    if (!whole && !grouped) return Verdict::NoLayout;
    return resident_id_valid(id) ? Verdict::Valid : Verdict::Invalid;
}

// [prefix] 11 digits, whole or 3-4-4; prefix +86 / 0086 / 86, its own group or glued on.
Verdict classify_phone(const std::vector<Group>& groups, size_t first, size_t last) {
    if (any_x(groups, first, last)) return Verdict::NoLayout;
    for (size_t g = first + 1; g < last; ++g)
        if (groups[g].plus) return Verdict::NoLayout;
    std::vector<std::string> parts;
    for (size_t g = first; g < last; ++g) parts.push_back(groups[g].digits);
    const bool plus = groups[first].plus;
    // Strip a prefix: a whole first group, or glued to the front of the first group.
    auto strip = [&](const std::string& prefix) {
        if (parts.size() > 1 && parts[0] == prefix) {
            parts.erase(parts.begin());
            return true;
        }
        if (parts[0].size() > prefix.size() && parts[0].compare(0, prefix.size(), prefix) == 0 &&
            parts[0].size() - prefix.size() >= 3) {
            parts[0] = parts[0].substr(prefix.size());
            return true;
        }
        return false;
    };
    if (plus) {
        if (!strip("86")) return Verdict::NoLayout;  // another country's number
    } else {
        // With a prefix the rest must still be 11 digits, so a bare 11-digit number is never stripped.
        size_t total = 0;
        for (const std::string& part : parts) total += part.size();
        if (total == 15) strip("0086");
        else if (total == 13) strip("86");
    }
    size_t total = 0;
    for (const std::string& part : parts) total += part.size();
    if (total != 11) return Verdict::NoLayout;
    const bool layout = parts.size() == 1 || (parts.size() == 3 && parts[0].size() == 3 && parts[1].size() == 4 &&
                                              parts[2].size() == 4);
    if (!layout) return Verdict::NoLayout;
    // The groups of the number itself use one separator.
    const size_t number_first = last - parts.size();
    if (parts.size() == 3 && !consistent_separators(groups, number_first, last)) return Verdict::NoLayout;
    const std::string digits = parts.size() == 1 ? parts[0] : parts[0] + parts[1] + parts[2];
    return digits[0] == '1' && digits[1] >= '3' && digits[1] <= '9' ? Verdict::Valid : Verdict::Invalid;
}

// 13–19 digits, whole, in 4s (last 1–4), or 4-6-5 / 4-6-4; Luhn.
Verdict classify_card(const std::vector<Group>& groups, size_t first, size_t last) {
    if (any_plus(groups, first, last) || any_x(groups, first, last)) return Verdict::NoLayout;
    const std::string digits = joined_digits(groups, first, last);
    if (digits.size() < 13 || digits.size() > 19) return Verdict::NoLayout;
    const size_t count = last - first;
    bool layout = count == 1;
    if (count > 1 && consistent_separators(groups, first, last)) {
        bool fours = true;
        for (size_t g = first; g + 1 < last; ++g) fours = fours && groups[g].digits.size() == 4;
        const size_t tail = groups[last - 1].digits.size();
        fours = fours && tail >= 1 && tail <= 4;
        const bool amex = count == 3 && groups[first].digits.size() == 4 && groups[first + 1].digits.size() == 6 &&
                          (groups[first + 2].digits.size() == 5 || groups[first + 2].digits.size() == 4);
        layout = fours || amex;
    }
    if (!layout) return Verdict::NoLayout;
    return luhn_valid(digits) ? Verdict::Valid : Verdict::Invalid;
}

struct Classified {
    Verdict verdict = Verdict::NoLayout;
    PiiType type = PiiType::BankCard;
};

Classified classify_number(const std::vector<Group>& groups, size_t first, size_t last) {
    Classified result;
    const std::pair<PiiType, Verdict (*)(const std::vector<Group>&, size_t, size_t)> kinds[] = {
        {PiiType::ResidentId, classify_resident_id}, {PiiType::Phone, classify_phone}, {PiiType::BankCard, classify_card}};
    for (const auto& [type, classify] : kinds) {
        const Verdict verdict = classify(groups, first, last);
        if (verdict == Verdict::Valid) return {Verdict::Valid, type};
        if (verdict == Verdict::Invalid) result.verdict = Verdict::Invalid;
    }
    return result;
}

size_t digits_in(const std::vector<Group>& groups, size_t first, size_t last) {
    size_t n = 0;
    for (size_t g = first; g < last; ++g) n += groups[g].digits.size();
    return n;
}

void find_numbers(std::string_view text, std::vector<PiiSpan>& out) {
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
        const char c = text[i];
        const bool starts = is_digit(c) || (c == '+' && i + 1 < n && is_digit(text[i + 1]));
        const bool free_before = i == 0 || !is_alnum(text[i - 1]);
        // Not the fractional part of a decimal number, nor a later part of an address or version.
        const bool decimal_before = i >= 2 && text[i - 1] == '.' && is_digit(text[i - 2]);
        if (!starts || !free_before || decimal_before || (c == '+' && i > 0 && text[i - 1] == '+')) {
            // Skip the rest of a word so that digits inside it never start a number.
            if (is_alnum(c)) {
                while (i < n && is_alnum(text[i])) ++i;
            } else {
                ++i;
            }
            continue;
        }
        std::vector<Group> groups;
        size_t j = i;
        while (true) {
            Group group;
            group.begin = j;
            if (text[j] == '+') {
                group.plus = true;
                ++j;
            }
            while (j < n && is_digit(text[j])) group.digits += text[j++];
            if (j < n && (text[j] == 'X' || text[j] == 'x') && (j + 1 == n || !is_alnum(text[j + 1]))) {
                group.has_x = true;
                ++j;
            }
            group.end = j;
            if (!groups.empty()) group.separator_before = text[group.begin - 1];
            groups.push_back(std::move(group));
            if (groups.back().has_x) break;
            if (j + 1 < n && (text[j] == ' ' || text[j] == '-') && is_digit(text[j + 1])) {
                ++j;
                continue;
            }
            break;
        }
        const size_t end = groups.back().end;
        const bool glued_after = end < n && is_alnum(text[end]);
        const bool decimal_after = end + 1 < n && text[end] == '.' && is_digit(text[end + 1]);
        if (!glued_after && !decimal_after) {
            const Classified whole = classify_number(groups, 0, groups.size());
            if (whole.verdict == Verdict::Valid) {
                out.push_back({groups.front().begin, end, whole.type});
            } else if (whole.verdict == Verdict::NoLayout && groups.size() > 1) {
                // Several numbers next to each other ("2024 13812345678"): the longest valid runs of
                // groups, left to right. A run with a layout but a bad checksum is skipped too.
                size_t s = 0;
                while (s < groups.size()) {
                    size_t matched = 0;
                    for (size_t e = groups.size(); e > s; --e) {
                        if (s == 0 && e == groups.size()) continue;
                        if (digits_in(groups, s, e) > 19) continue;
                        const Classified part = classify_number(groups, s, e);
                        if (part.verdict == Verdict::Valid) {
                            out.push_back({groups[s].begin, groups[e - 1].end, part.type});
                            matched = e;
                            break;
                        }
                    }
                    s = matched ? matched : s + 1;
                }
            }
        }
        i = end;
        if (glued_after)
            while (i < n && is_alnum(text[i])) ++i;
    }
}

// ---- E-mail --------------------------------------------------------------------------------------

bool is_local_char(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }
bool is_domain_char(char c) { return is_alnum(c) || c == '.' || c == '-'; }

void find_emails(std::string_view text, std::vector<PiiSpan>& out) {
    const size_t n = text.size();
    size_t resume = 0;  // the next address starts after the previous one
    for (size_t at = text.find('@'); at != std::string_view::npos; at = text.find('@', at + 1)) {
        if (at < resume) continue;
        size_t begin = at;
        while (begin > resume && is_local_char(text[begin - 1])) --begin;
        while (begin < at && text[begin] == '.') ++begin;  // a local part does not start with a dot
        if (begin == at || text[at - 1] == '.') continue;
        size_t end = at + 1;
        while (end < n && is_domain_char(text[end])) ++end;
        while (end > at + 1 && (text[end - 1] == '.' || text[end - 1] == '-')) --end;
        const std::string_view domain = text.substr(at + 1, end - at - 1);
        // Labels: non-empty, no leading/trailing dash; at least two; the last alphabetic, 2+ letters.
        std::vector<std::string_view> labels;
        size_t from = 0;
        bool ok = !domain.empty();
        while (ok) {
            const size_t dot = domain.find('.', from);
            const std::string_view label = domain.substr(from, dot == std::string_view::npos ? dot : dot - from);
            ok = !label.empty() && label.front() != '-' && label.back() != '-';
            labels.push_back(label);
            if (dot == std::string_view::npos) break;
            from = dot + 1;
        }
        if (!ok || labels.size() < 2) continue;
        const std::string_view tld = labels.back();
        if (tld.size() < 2 || !std::all_of(tld.begin(), tld.end(), is_alpha)) continue;
        out.push_back({begin, end, PiiType::Email});
        resume = end;
    }
}

// ---- IP addresses --------------------------------------------------------------------------------

void find_ipv4(std::string_view text, std::vector<PiiSpan>& out) {
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
        if (!is_digit(text[i]) || (i > 0 && (is_alnum(text[i - 1]) || text[i - 1] == '.'))) {
            ++i;
            continue;
        }
        size_t j = i;
        bool ok = true;
        for (int part = 0; part < 4 && ok; ++part) {
            if (part > 0) {
                if (j < n && text[j] == '.') ++j;
                else ok = false;
            }
            size_t digits = 0;
            int value = 0;
            while (ok && j < n && is_digit(text[j]) && digits < 4) {
                value = value * 10 + (text[j] - '0');
                ++j;
                ++digits;
            }
            ok = ok && digits >= 1 && digits <= 3 && value <= 255;
        }
        const bool glued = j < n && (is_alnum(text[j]) || (text[j] == '.' && j + 1 < n && is_digit(text[j + 1])));
        if (ok && !glued) {
            out.push_back({i, j, PiiType::Ipv4});
            i = j;
        } else {
            while (i < n && is_digit(text[i])) ++i;
        }
    }
}

void find_ipv6(std::string_view text, std::vector<PiiSpan>& out) {
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
        const char c = text[i];
        const bool starts = is_hex(c) || c == ':';
        // Free before: nothing of a word, address or number; a single ':' after a label is fine
        // ("ip:fe80::1"), but not one inside a run of hex groups.
        const bool free_before =
            i == 0 || (!is_alnum(text[i - 1]) && text[i - 1] != ':' && text[i - 1] != '.') ||
            (text[i - 1] == ':' && c != ':' && (i < 2 || (!is_hex(text[i - 2]) && text[i - 2] != ':')));
        if (!starts || !free_before) {
            if (is_alnum(c))
                while (i < n && is_alnum(text[i])) ++i;
            else
                ++i;
            continue;
        }
        size_t j = i;
        size_t colons = 0;
        while (j < n && (is_hex(text[j]) || text[j] == ':' || text[j] == '.')) colons += text[j++] == ':';
        size_t end = j;
        if (colons >= 2 && !(end < n && is_alnum(text[end]))) {
            // Sentence punctuation after the address is not part of it.
            for (int attempt = 0; attempt < 2 && end > i; ++attempt) {
                const std::string candidate(text.substr(i, end - i));
                in6_addr address{};
                const bool has_hex_digit = std::any_of(candidate.begin(), candidate.end(), is_hex);
                if (has_hex_digit && candidate.size() <= 45 && inet_pton(AF_INET6, candidate.c_str(), &address) == 1) {
                    out.push_back({i, end, PiiType::Ipv6});
                    break;
                }
                if (text[end - 1] == '.' || (text[end - 1] == ':' && (end < i + 2 || text[end - 2] != ':'))) --end;
                else break;
            }
        }
        i = j;
        while (i < n && is_alnum(text[i])) ++i;
    }
}

}  // namespace

const char* pii_type_label(PiiType type) {
    switch (type) {
        case PiiType::ResidentId: return "ID";
        case PiiType::Phone: return "PHONE";
        case PiiType::BankCard: return "CARD";
        case PiiType::Email: return "EMAIL";
        case PiiType::Ipv4: return "IPv4";
        case PiiType::Ipv6: return "IPv6";
    }
    return "PII";
}

const char* pii_type_name(PiiType type) {
    switch (type) {
        case PiiType::ResidentId: return "resident_id";
        case PiiType::Phone: return "phone";
        case PiiType::BankCard: return "bank_card";
        case PiiType::Email: return "email";
        case PiiType::Ipv4: return "ipv4";
        case PiiType::Ipv6: return "ipv6";
    }
    return "pii";
}

bool luhn_valid(std::string_view digits) {
    if (digits.size() < 2) return false;
    int sum = 0;
    bool twice = false;
    for (size_t k = digits.size(); k-- > 0;) {
        if (!is_digit(digits[k])) return false;
        int d = digits[k] - '0';
        if (twice) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
        twice = !twice;
    }
    return sum % 10 == 0;
}

char resident_id_check_char(std::string_view first17) {
    if (first17.size() != 17 || !std::all_of(first17.begin(), first17.end(), is_digit)) return 0;
    static constexpr int kWeights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int k = 0; k < 17; ++k) sum += (first17[k] - '0') * kWeights[k];
    const int check = (12 - sum % 11) % 11;
    return check == 10 ? 'X' : char('0' + check);
}

bool resident_id_valid(std::string_view id) {
    if (id.size() != 18) return false;
    const char check = resident_id_check_char(id.substr(0, 17));
    if (check == 0) return false;
    const char last = id[17] == 'x' ? 'X' : id[17];
    if (last != check) return false;
    return known_province(to_int(id.substr(0, 2))) && plausible_birth_date(id.substr(6, 8));
}

std::vector<PiiSpan> find_pii(std::string_view text) {
    // In priority order: a later kind's span that overlaps an earlier one is dropped.
    std::vector<PiiSpan> kinds[4];
    find_emails(text, kinds[0]);
    find_ipv6(text, kinds[1]);
    find_ipv4(text, kinds[2]);
    find_numbers(text, kinds[3]);
    std::vector<PiiSpan> spans;  // sorted by begin, disjoint
    for (const std::vector<PiiSpan>& kind : kinds)
        for (const PiiSpan& span : kind) {
            auto next = std::lower_bound(spans.begin(), spans.end(), span.begin,
                                         [](const PiiSpan& kept, size_t at) { return kept.begin < at; });
            const bool overlaps = (next != spans.end() && next->begin < span.end) ||
                                  (next != spans.begin() && std::prev(next)->end > span.begin);
            if (!overlaps) spans.insert(next, span);
        }
    return spans;
}

std::string mask_pii(std::string_view text, const std::vector<PiiSpan>& spans) {
    std::string out;
    out.reserve(text.size());
    size_t at = 0;
    for (const PiiSpan& span : spans) {
        if (span.begin < at || span.end > text.size() || span.begin > span.end)
            fail("mask_pii: span [", span.begin, ", ", span.end, ") is out of order or outside the text (",
                 text.size(), " bytes)");
        out.append(text.substr(at, span.begin - at));
        out.append(kPiiMaskGlyph);
        out.append(" [");
        out.append(pii_type_label(span.type));
        out.append("]");
        at = span.end;
    }
    out.append(text.substr(at));
    return out;
}

std::string mask_pii(std::string_view text) { return mask_pii(text, find_pii(text)); }

std::string mask_pii_range(std::string_view text, size_t begin, size_t end, const std::vector<PiiSpan>& spans) {
    end = std::min(end, text.size());
    begin = std::min(begin, end);
    std::string out;
    size_t at = begin;
    // The first span ending after `begin` is the first that can overlap the range (ends are sorted).
    auto it = std::upper_bound(spans.begin(), spans.end(), begin, [](size_t at, const PiiSpan& span) { return at < span.end; });
    for (; it != spans.end() && it->begin < end; ++it) {
        if (it->begin > at) out.append(text.substr(at, it->begin - at));
        out.append(kPiiMaskGlyph);
        out.append(" [");
        out.append(pii_type_label(it->type));
        out.append("]");
        at = std::max(at, std::min(it->end, end));
    }
    if (at < end) out.append(text.substr(at, end - at));
    return out;
}

std::string mask_pii_if_enabled(std::string_view text) {
    return privacy_defaults().mask_pii ? mask_pii(text) : std::string(text);
}

std::vector<int> token_pii_spans(std::span<const Token> tokens, const std::vector<PiiSpan>& spans) {
    std::vector<int> out(tokens.size(), -1);
    for (size_t t = 0; t < tokens.size(); ++t) {
        const Token& token = tokens[t];
        if (token.end <= token.begin) continue;
        // Spans are sorted and disjoint, so their ends are sorted too: the first span ending after
        // the token's start is the only candidate that can begin before its end.
        auto it = std::upper_bound(spans.begin(), spans.end(), size_t(token.begin),
                                   [](size_t at, const PiiSpan& span) { return at < span.end; });
        if (it != spans.end() && it->begin < token.end) out[t] = static_cast<int>(it - spans.begin());
    }
    return out;
}

std::vector<bool> token_pii_mask(std::span<const Token> tokens, const std::vector<PiiSpan>& spans) {
    const std::vector<int> which = token_pii_spans(tokens, spans);
    std::vector<bool> mask(which.size());
    for (size_t t = 0; t < which.size(); ++t) mask[t] = which[t] >= 0;
    return mask;
}

std::vector<bool> token_pii_mask(std::span<const Token> tokens, std::string_view text) {
    return token_pii_mask(tokens, find_pii(text));
}

// ---- Process-wide setting -------------------------------------------------------------------------

namespace {
std::mutex& settings_mutex() {
    static std::mutex mutex;
    return mutex;
}
PrivacySettings& settings_storage() {
    static PrivacySettings settings;
    return settings;
}
}  // namespace

PrivacySettings privacy_defaults() {
    std::lock_guard lock(settings_mutex());
    return settings_storage();
}

void set_privacy_defaults(const PrivacySettings& settings) {
    std::lock_guard lock(settings_mutex());
    settings_storage() = settings;
}

// ---- Differential privacy -------------------------------------------------------------------------

namespace {

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// δ achieved by Gaussian noise σ for sensitivity Δ at ε (Balle & Wang 2018, Theorem 8).
double analytic_gaussian_delta(double epsilon, double sensitivity, double sigma) {
    const double a = sensitivity / (2 * sigma), b = epsilon * sigma / sensitivity;
    return normal_cdf(a - b) - std::exp(epsilon) * normal_cdf(-a - b);
}

void check_epsilon_sensitivity(double epsilon, double sensitivity) {
    if (!(epsilon > 0) || !std::isfinite(epsilon)) fail("differential privacy: epsilon must be > 0 (got ", epsilon, ")");
    if (!(sensitivity > 0) || !std::isfinite(sensitivity))
        fail("differential privacy: sensitivity must be > 0 (got ", sensitivity, ")");
}

// Uniform in (0, 1) from the top 53 bits (never exactly 0 or 1).
double open_uniform(std::mt19937_64& rng) {
    return (double(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

}  // namespace

double laplace_scale(double epsilon, double sensitivity) {
    check_epsilon_sensitivity(epsilon, sensitivity);
    return sensitivity / epsilon;
}

double gaussian_sigma(double epsilon, double delta, double sensitivity, GaussianCalibration calibration) {
    check_epsilon_sensitivity(epsilon, sensitivity);
    if (!(delta > 0) || !(delta < 1)) fail("differential privacy: delta must be in (0, 1) (got ", delta, ")");
    if (calibration == GaussianCalibration::Classic) {
        if (epsilon >= 1)
            fail("differential privacy: the classic Gaussian calibration holds only for epsilon < 1 (got ", epsilon,
                 "); use the analytic one");
        return sensitivity * std::sqrt(2 * std::log(1.25 / delta)) / epsilon;
    }
    // δ(σ) falls monotonically from 1 to 0: bisect (in log σ) for the smallest σ with δ(σ) ≤ δ.
    double lo = std::log(sensitivity * 1e-6), hi = std::log(sensitivity * 1e6);
    if (analytic_gaussian_delta(epsilon, sensitivity, std::exp(hi)) > delta)
        fail("differential privacy: no Gaussian noise up to 1e6·sensitivity reaches delta ", delta);
    for (int iteration = 0; iteration < 200; ++iteration) {
        const double mid = 0.5 * (lo + hi);
        if (analytic_gaussian_delta(epsilon, sensitivity, std::exp(mid)) > delta) lo = mid;
        else hi = mid;
    }
    return std::exp(hi);
}

DpNoiseReport dp_noise_parameters(const DpParams& params) {
    DpNoiseReport report;
    report.epsilon = params.epsilon;
    report.sensitivity = params.sensitivity;
    report.clamped = params.clamp_to_unit;
    if (params.mechanism == DpMechanism::Laplace) {
        report.mechanism = "laplace";
        report.scale = laplace_scale(params.epsilon, params.sensitivity);
        report.stddev = std::sqrt(2.0) * report.scale;
        report.calibration = "Laplace(0, b) per value with b = sensitivity / epsilon (epsilon-DP for L1 sensitivity)";
    } else {
        report.mechanism = "gaussian";
        report.delta = params.delta;
        report.scale = gaussian_sigma(params.epsilon, params.delta, params.sensitivity, params.calibration);
        report.stddev = report.scale;
        report.calibration =
            params.calibration == GaussianCalibration::Classic
                ? "N(0, sigma^2) per value with sigma = sensitivity * sqrt(2 ln(1.25/delta)) / epsilon "
                  "((epsilon, delta)-DP for L2 sensitivity, epsilon < 1; Dwork & Roth 2014, Thm A.1)"
                : "N(0, sigma^2) per value with the smallest sigma such that Phi(D/(2 sigma) - epsilon sigma/D) - "
                  "exp(epsilon) Phi(-D/(2 sigma) - epsilon sigma/D) <= delta, D = L2 sensitivity "
                  "(analytic Gaussian mechanism, Balle & Wang 2018)";
    }
    return report;
}

DpNoiseReport add_dp_noise(std::span<float> values, const DpParams& params) {
    DpNoiseReport report = dp_noise_parameters(params);
    std::mt19937_64 rng(params.seed);
    if (params.mechanism == DpMechanism::Laplace) {
        const double b = report.scale;
        for (float& value : values) {
            // Inverse CDF: u uniform in (-1/2, 1/2), x = -b sgn(u) ln(1 - 2|u|).
            const double u = open_uniform(rng) - 0.5;
            const double noise = -b * (u < 0 ? -1.0 : 1.0) * std::log(1 - 2 * std::fabs(u));
            value = static_cast<float>(double(value) + noise);
        }
    } else {
        const double sigma = report.scale;
        constexpr double kTwoPi = 6.283185307179586476925286766559;
        for (size_t k = 0; k < values.size(); k += 2) {
            // Box–Muller: two independent normals from two uniforms.
            const double r = std::sqrt(-2 * std::log(open_uniform(rng)));
            const double theta = kTwoPi * open_uniform(rng);
            values[k] = static_cast<float>(double(values[k]) + sigma * r * std::cos(theta));
            if (k + 1 < values.size()) values[k + 1] = static_cast<float>(double(values[k + 1]) + sigma * r * std::sin(theta));
        }
    }
    if (params.clamp_to_unit)
        for (float& value : values) value = std::clamp(value, 0.0f, 1.0f);
    report.values = values.size();
    return report;
}

}  // namespace attn
