#include "engine/watchpoint.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <deque>
#include <functional>
#include <mutex>
#include <numeric>
#include <regex>

#include "engine/attention_metrics.h"
#include "engine/error.h"

namespace attn {

// The compiled regex of a mass(...) watchpoint and the token positions it matched in recent texts.
// Keyed by the matched text itself (its length and hash): the live session's text only grows, a
// scrub back re-asks for an earlier prefix, and a restart may reuse the same Session object.
class WatchpointPatternCache {
public:
    WatchpointPatternCache(const std::string& pattern, bool ignore_case)
        : regex_(compile_pattern(pattern, ignore_case)) {}

    std::vector<int64_t> positions(const Session& session, size_t text_end) {
        text_end = std::min(text_end, session.text.size());
        const Key key{text_end, std::hash<std::string_view>{}(std::string_view(session.text).substr(0, text_end))};
        {
            std::lock_guard lock(mutex_);
            for (const Entry& entry : entries_)
                if (entry.key == key) return entry.positions;
        }
        std::vector<int64_t> found = tokens_matching(session, regex_, text_end);
        std::lock_guard lock(mutex_);
        entries_.push_back({key, found});
        if (entries_.size() > kEntries) entries_.pop_front();
        return found;
    }

private:
    static constexpr size_t kEntries = 64;  // enough for scrubbing back and forth around the current step
    struct Key {
        size_t length;
        size_t hash;
        bool operator==(const Key&) const = default;
    };
    struct Entry {
        Key key;
        std::vector<int64_t> positions;
    };
    const std::regex regex_;  // std::regex matching is const and safe to share between threads
    std::mutex mutex_;
    std::deque<Entry> entries_;
};

// ---- parsing ------------------------------------------------------------------------------

namespace {

bool is_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

class Parser {
public:
    explicit Parser(std::string_view text) : text_(text) {}

    Watchpoint parse() {
        Watchpoint w;
        w.text = std::string(text_);
        bool has_aggregate = true;
        if (accept_word("any")) w.aggregate = WatchAggregate::Any;
        else if (accept_word("all")) w.aggregate = WatchAggregate::All;
        else if (accept_word("mean")) w.aggregate = WatchAggregate::Mean;
        else if (accept_word("min")) w.aggregate = WatchAggregate::Min;
        else if (accept_word("max")) w.aggregate = WatchAggregate::Max;
        else has_aggregate = false;

        skip_spaces();
        const size_t metric_column = column();
        parse_metric(w);
        if (!w.is_head_metric() && has_aggregate)
            error_at(metric_column, "a head metric after the aggregate (entropy, top1, sink, prev, mass, jsd, l1)");
        if (accept_word("of")) {
            if (!w.is_head_metric()) error_at(column_before_last_word_, "a comparison (token_prob and logprob have no heads)");
            w.heads.push_back(parse_head_set());
            while (accept_char(','))
                w.heads.push_back(parse_head_set());
        }
        w.comparison = parse_comparison(w.is_head_metric() && w.heads.empty());
        w.threshold = parse_number();
        skip_spaces();
        if (pos_ < text_.size()) error("the end of the watchpoint");
        if (w.metric == WatchMetric::Mass) w.pattern_cache = std::make_shared<WatchpointPatternCache>(w.pattern, w.ignore_case);
        return w;
    }

private:
    void parse_metric(Watchpoint& w) {
        if (accept_word("entropy")) w.metric = WatchMetric::Entropy;
        else if (accept_word("top1") || accept_word("top-1")) w.metric = WatchMetric::Top1;
        else if (accept_word("sink")) w.metric = WatchMetric::Sink;
        else if (accept_word("prev")) w.metric = WatchMetric::PreviousToken;
        else if (accept_word("jsd")) w.metric = WatchMetric::Jsd;
        else if (accept_word("l1")) w.metric = WatchMetric::L1;
        else if (accept_word("token_prob")) w.metric = WatchMetric::TokenProb;
        else if (accept_word("logprob")) w.metric = WatchMetric::LogProb;
        else if (accept_word("mass")) {
            w.metric = WatchMetric::Mass;
            if (accept_char('(')) {
                parse_regex(w);
                expect_char(')', "')' after the regex");
            } else if (accept_word("on")) {
                accept_word("tokens");
                accept_word("matching");
                parse_regex(w);
            } else {
                error("'(' or 'on' and a /regex/ after mass");
            }
        } else {
            error("a metric (entropy, top1, sink, prev, mass(/regex/), jsd, l1, token_prob, logprob) or an aggregate "
                  "(any, all, mean, min, max)");
        }
    }

    void parse_regex(Watchpoint& w) {
        skip_spaces();
        const size_t regex_column = column();
        if (!accept_char('/')) error("a /regex/");
        std::string pattern;
        for (;;) {
            if (pos_ >= text_.size()) error_at(regex_column, "a regex closed by '/'");
            const char c = text_[pos_++];
            if (c == '/') break;
            if (c == '\\' && pos_ < text_.size() && text_[pos_] == '/') {
                pattern += '/';
                ++pos_;
            } else {
                pattern += c;
                if (c == '\\' && pos_ < text_.size()) pattern += text_[pos_++];  // keep other escapes whole
            }
        }
        if (pos_ < text_.size() && lower(text_[pos_]) == 'i' && (pos_ + 1 == text_.size() || !is_word_char(text_[pos_ + 1]))) {
            w.ignore_case = true;
            ++pos_;
        }
        if (pattern.empty()) error_at(regex_column, "a non-empty regex");
        try {
            compile_pattern(pattern, w.ignore_case);
        } catch (const Error& e) {
            error_at(regex_column, "a valid ECMAScript regex (", e.what(), ")");
        }
        w.pattern = std::move(pattern);
    }

    HeadSet parse_head_set() {
        skip_spaces();
        HeadSet set;
        bool any = false;
        if (pos_ < text_.size() && lower(text_[pos_]) == 'l' && pos_ + 1 < text_.size() &&
            (is_digit(text_[pos_ + 1]) || text_[pos_ + 1] == '*')) {
            ++pos_;
            set.layers = parse_range("layer");
            any = true;
        }
        if (pos_ < text_.size() && lower(text_[pos_]) == 'h' && pos_ + 1 < text_.size() &&
            (is_digit(text_[pos_ + 1]) || text_[pos_ + 1] == '*')) {
            ++pos_;
            set.heads = parse_range("head");
            any = true;
        }
        if (!any) error("a head set like L12H3, L5, L0-3, L*H2 or H1");
        if (pos_ < text_.size() && is_word_char(text_[pos_])) error("',' or a comparison after the head set");
        return set;
    }

    IndexRange parse_range(const char* what) {
        if (accept_char_here('*')) return {0, -1};
        const size_t first_column = column();
        IndexRange range;
        range.first = parse_index(what);
        range.last = range.first;
        if (accept_char_here('-')) {
            const size_t last_column = column();
            range.last = parse_index(what);
            if (range.last < range.first)
                error_at(last_column, "a last ", what, " >= ", range.first, " (range starts at column ", first_column, ")");
        }
        return range;
    }

    int parse_index(const char* what) {
        int value = 0;
        const char* begin = text_.data() + pos_;
        const auto [end, ec] = std::from_chars(begin, text_.data() + text_.size(), value);
        if (ec != std::errc() || value < 0) error("a ", what, " number");
        pos_ += static_cast<size_t>(end - begin);
        return value;
    }

    WatchComparison parse_comparison(bool heads_may_follow) {
        skip_spaces();
        if (accept_char_here('<')) return accept_char_here('=') ? WatchComparison::LessEqual : WatchComparison::Less;
        if (accept_char_here('>')) return accept_char_here('=') ? WatchComparison::GreaterEqual : WatchComparison::Greater;
        error(heads_may_follow ? "'of' and a head set, or a comparison (<, <=, >, >=)" : "a comparison (<, <=, >, >=)");
    }

    double parse_number() {
        skip_spaces();
        size_t start = pos_;
        if (start < text_.size() && text_[start] == '+') ++start;  // from_chars takes '-' but not '+'
        double value = 0;
        const auto [end, ec] = std::from_chars(text_.data() + start, text_.data() + text_.size(), value);
        if (ec != std::errc() || !std::isfinite(value)) error("a number");
        pos_ = static_cast<size_t>(end - text_.data());
        return value;
    }

    // ---- characters and words ----
    size_t column() const { return pos_ + 1; }
    void skip_spaces() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
    }
    bool accept_char_here(char c) {
        if (pos_ < text_.size() && text_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    bool accept_char(char c) {
        skip_spaces();
        return accept_char_here(c);
    }
    void expect_char(char c, const char* what) {
        if (!accept_char(c)) error(what);
    }
    // A whole word, case-insensitive: "top1" does not accept the start of "top10".
    bool accept_word(std::string_view word) {
        skip_spaces();
        if (text_.size() - pos_ < word.size()) return false;
        for (size_t i = 0; i < word.size(); ++i)
            if (lower(text_[pos_ + i]) != word[i]) return false;
        const size_t after = pos_ + word.size();
        if (after < text_.size() && is_word_char(text_[after]) && is_word_char(word.back())) return false;
        column_before_last_word_ = column();
        pos_ = after;
        return true;
    }

    template <typename... Parts>
    [[noreturn]] void error(const Parts&... expected) {
        skip_spaces();
        error_at(column(), expected...);
    }
    template <typename... Parts>
    [[noreturn]] void error_at(size_t error_column, const Parts&... expected) {
        const size_t at = error_column - 1;
        std::string found = "the end of the text";
        if (at < text_.size()) {
            size_t end = at + 1;  // what follows, up to the next space
            while (end < text_.size() && end - at < 24 && text_[end] != ' ' && text_[end] != '\t') ++end;
            found = cat("'", text_.substr(at, end - at), "'");
        }
        fail("watchpoint \"", text_, "\": column ", error_column, ": expected ", expected..., ", found ", found);
    }

    std::string_view text_;
    size_t pos_ = 0;
    size_t column_before_last_word_ = 1;
};

const char* metric_name(WatchMetric metric) {
    switch (metric) {
        case WatchMetric::Entropy: return "entropy";
        case WatchMetric::Top1: return "top1";
        case WatchMetric::Sink: return "sink";
        case WatchMetric::PreviousToken: return "prev";
        case WatchMetric::Mass: return "mass";
        case WatchMetric::Jsd: return "jsd";
        case WatchMetric::L1: return "l1";
        case WatchMetric::TokenProb: return "token_prob";
        case WatchMetric::LogProb: return "logprob";
    }
    return "?";
}

std::string range_text(const IndexRange& range) {
    if (range.first == 0 && range.last < 0) return "*";
    if (range.last == range.first) return std::to_string(range.first);
    return cat(range.first, "-", range.last);
}

}  // namespace

Watchpoint parse_watchpoint(std::string_view text) { return Parser(text).parse(); }

std::string to_string(const Watchpoint& w) {
    std::string out;
    switch (w.aggregate) {
        case WatchAggregate::Any: break;  // the default
        case WatchAggregate::All: out += "all "; break;
        case WatchAggregate::Mean: out += "mean "; break;
        case WatchAggregate::Min: out += "min "; break;
        case WatchAggregate::Max: out += "max "; break;
    }
    out += metric_name(w.metric);
    if (w.metric == WatchMetric::Mass) {
        out += "(/";
        for (char c : w.pattern) {
            if (c == '/') out += '\\';
            out += c;
        }
        out += w.ignore_case ? "/i)" : "/)";
    }
    for (size_t i = 0; i < w.heads.size(); ++i) {
        out += i == 0 ? " of " : ",";
        const HeadSet& set = w.heads[i];
        const bool all_layers = set.layers.first == 0 && set.layers.last < 0;
        const bool all_heads = set.heads.first == 0 && set.heads.last < 0;
        out += 'L';
        out += range_text(set.layers);
        if (!all_heads || all_layers) {
            out += 'H';
            out += range_text(set.heads);
        }
    }
    switch (w.comparison) {
        case WatchComparison::Less: out += " < "; break;
        case WatchComparison::LessEqual: out += " <= "; break;
        case WatchComparison::Greater: out += " > "; break;
        case WatchComparison::GreaterEqual: out += " >= "; break;
    }
    char number[64];
    const auto [end, ec] = std::to_chars(number, number + sizeof number, w.threshold);  // shortest exact form
    out.append(number, end);
    return out;
}

// ---- evaluation ---------------------------------------------------------------------------

std::vector<std::pair<int, int>> watched_heads(const Watchpoint& w, const CaptureShape& shape) {
    std::vector<std::pair<int, int>> pairs;
    if (!w.is_head_metric()) return pairs;
    std::vector<char> chosen(static_cast<size_t>(shape.n_layer) * shape.n_head, 0);
    auto resolve = [&](const IndexRange& range, int count, const char* what) {
        const int last = range.last < 0 ? count - 1 : range.last;
        if (range.first >= count || last >= count)
            fail("watchpoint \"", w.text, "\": ", what, " ", std::max(range.first, last), " is out of range (the model has ",
                 count, " ", what, "s)");
        return std::pair{range.first, last};
    };
    if (w.heads.empty()) {
        std::fill(chosen.begin(), chosen.end(), 1);
    } else {
        for (const HeadSet& set : w.heads) {
            const auto [l0, l1] = resolve(set.layers, shape.n_layer, "layer");
            const auto [h0, h1] = resolve(set.heads, shape.n_head, "head");
            for (int l = l0; l <= l1; ++l)
                for (int h = h0; h <= h1; ++h) chosen[static_cast<size_t>(l) * shape.n_head + h] = 1;
        }
    }
    for (int l = 0; l < shape.n_layer; ++l)
        for (int h = 0; h < shape.n_head; ++h)
            if (chosen[static_cast<size_t>(l) * shape.n_head + h]) pairs.emplace_back(l, h);
    if (pairs.empty()) fail("watchpoint \"", w.text, "\": covers no head");
    return pairs;
}

namespace {

bool satisfies(WatchComparison comparison, double value, double threshold) {
    switch (comparison) {
        case WatchComparison::Less: return value < threshold;
        case WatchComparison::LessEqual: return value <= threshold;
        case WatchComparison::Greater: return value > threshold;
        case WatchComparison::GreaterEqual: return value >= threshold;
    }
    return false;
}

bool looks_for_small(WatchComparison comparison) {
    return comparison == WatchComparison::Less || comparison == WatchComparison::LessEqual;
}

}  // namespace

WatchpointHit evaluate(const Watchpoint& w, const Session& session, const CpuTileSource& source, int64_t step,
                       int threads) {
    WatchpointHit hit;
    hit.step = step;
    hit.query = query_of_step(session, step);
    const int64_t q = hit.query;
    if (!w.is_head_metric()) {
        const double logprob = session.steps[static_cast<size_t>(step)].logprob;
        hit.value = w.metric == WatchMetric::TokenProb ? std::exp(logprob) : logprob;
        hit.fired = satisfies(w.comparison, hit.value, w.threshold);
        return hit;
    }

    const std::vector<std::pair<int, int>> heads = watched_heads(w, session.capture->shape());
    if ((w.metric == WatchMetric::Jsd || w.metric == WatchMetric::L1) && q == 0)
        fail("watchpoint \"", w.text, "\": query 0 has no previous row to compare with");
    std::vector<int64_t> matched;
    if (w.metric == WatchMetric::Mass) {
        if (!w.pattern_cache) fail("watchpoint \"", w.text, "\": has no compiled pattern (not made by parse_watchpoint)");
        const size_t text_end = q < session.positions() ? session.tokens[static_cast<size_t>(q)].end : session.text.size();
        matched = w.pattern_cache->positions(session, text_end);
    }

    std::vector<double> values(heads.size());
    for_each_parallel(static_cast<int64_t>(heads.size()), threads, [&](int64_t index) {
        const auto [layer, head] = heads[static_cast<size_t>(index)];
        const std::vector<float> row = source.row(layer, head, q);
        double& value = values[static_cast<size_t>(index)];
        switch (w.metric) {
            case WatchMetric::Entropy: value = entropy_bits(row); break;
            case WatchMetric::Top1: value = head_focus(row).top1; break;
            case WatchMetric::Sink: value = head_focus(row).sink_mass; break;
            case WatchMetric::PreviousToken: value = head_focus(row).previous_token_mass; break;
            case WatchMetric::Mass: value = mass_on_keys(row, matched); break;
            case WatchMetric::Jsd:
            case WatchMetric::L1: {
                const RowComparison change = compare_rows(source.row(layer, head, q - 1), row);
                value = w.metric == WatchMetric::Jsd ? change.jsd_bits : change.l1;
                break;
            }
            case WatchMetric::TokenProb:
            case WatchMetric::LogProb: break;  // handled above
        }
    });

    for (double v : values) hit.satisfying_heads += satisfies(w.comparison, v, w.threshold) ? 1 : 0;
    // The head to report: the smallest or the largest value.
    auto pick = [&](bool smallest) {
        const auto it = smallest ? std::min_element(values.begin(), values.end()) : std::max_element(values.begin(), values.end());
        const auto [layer, head] = heads[static_cast<size_t>(it - values.begin())];
        hit.value = *it;
        hit.layer = layer;
        hit.head = head;
    };
    switch (w.aggregate) {
        case WatchAggregate::Any: pick(looks_for_small(w.comparison)); break;
        case WatchAggregate::All: pick(!looks_for_small(w.comparison)); break;
        case WatchAggregate::Min: pick(true); break;
        case WatchAggregate::Max: pick(false); break;
        case WatchAggregate::Mean:
            hit.value = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
            break;
    }
    hit.fired = satisfies(w.comparison, hit.value, w.threshold);
    return hit;
}

}  // namespace attn
