// Personal data: detection (resident IDs with their check character, phones, bank cards with
// Luhn, e-mail, IPv4/IPv6), masking of text and of token labels, the process-wide switch, and the
// scale of the differential-privacy noise.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/pii.h"
#include "tests/crafted_session.h"

using namespace attn;

namespace {

// ---- Generators (check characters computed here, independently of the engine) ----------------

char id_check(const std::string& first17) {
    static const int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; ++i) sum += (first17[i] - '0') * weights[i];
    const char table[] = "10X98765432";  // (sum mod 11) → check character
    return table[sum % 11];
}

std::string digits(std::mt19937_64& rng, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += char('0' + rng() % 10);
    return out;
}

std::string two(int value) {
    std::string out(2, '0');
    out[0] = char('0' + value / 10);
    out[1] = char('0' + value % 10);
    return out;
}

// "1", then a second digit from `second_digits`, then nine random digits.
std::string mobile(std::mt19937_64& rng, const std::string& second_digits) {
    std::string out(1, '1');
    out += second_digits[rng() % second_digits.size()];
    out += digits(rng, 9);
    return out;
}

std::string valid_id(std::mt19937_64& rng, bool want_x = false) {
    static const int provinces[] = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42,
                                    43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65};
    while (true) {
        const int province = provinces[rng() % std::size(provinces)];
        const int year = 1940 + int(rng() % 66), month = 1 + int(rng() % 12), day = 1 + int(rng() % 28);
        const std::string first17 =
            std::to_string(province) + digits(rng, 4) + std::to_string(year) + two(month) + two(day) + digits(rng, 3);
        const char check = id_check(first17);
        if (want_x && check != 'X') continue;
        return first17 + check;
    }
}

char luhn_check_digit(const std::string& payload) {
    // The digit d that makes payload + d pass Luhn: double every second digit from the right of payload.
    int sum = 0;
    bool twice = true;
    for (size_t i = payload.size(); i-- > 0;) {
        int d = payload[i] - '0';
        if (twice) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
        twice = !twice;
    }
    return char('0' + (10 - sum % 10) % 10);
}

bool luhn_ok(const std::string& number) {
    return luhn_check_digit(number.substr(0, number.size() - 1)) == number.back();
}

bool test_id_valid(const std::string& s) {  // the test's own ID check (check char only)
    return s.size() == 18 && std::all_of(s.begin(), s.begin() + 17, ::isdigit) && id_check(s.substr(0, 17)) == s[17];
}

std::string valid_card(std::mt19937_64& rng, int length) {
    static const char* prefixes[] = {"62", "4", "51", "37", "35"};
    while (true) {
        const std::string prefix = prefixes[rng() % std::size(prefixes)];
        const std::string payload = prefix + digits(rng, length - 1 - int(prefix.size()));
        const std::string card = payload + luhn_check_digit(payload);
        if (!test_id_valid(card)) return card;
    }
}

std::string wrong_digit(char right) { return std::string(1, right == '9' ? '0' : char(right + 1)); }

std::string group(const std::string& number, const std::vector<int>& sizes, char separator) {
    std::string out;
    size_t at = 0;
    for (int size : sizes) {
        if (!out.empty()) out += separator;
        out += number.substr(at, size);
        at += size;
    }
    return out;
}

// The one span found in `text`, which must be exactly `pii` of `type`.
void require_single(const std::string& prefix, const std::string& pii, const std::string& suffix, PiiType type) {
    const std::string text = prefix + pii + suffix;
    const std::vector<PiiSpan> spans = find_pii(text);
    INFO("text: " << text);
    REQUIRE(spans.size() == 1);
    CHECK(spans[0].type == type);
    CHECK(text.substr(spans[0].begin, spans[0].end - spans[0].begin) == pii);
    const std::string masked = mask_pii(text);
    CHECK(masked == prefix + "●●●● [" + pii_type_label(type) + "]" + suffix);
    CHECK(masked.find(pii) == std::string::npos);
}

bool has_type(const std::vector<PiiSpan>& spans, PiiType type) {
    return std::any_of(spans.begin(), spans.end(), [&](const PiiSpan& s) { return s.type == type; });
}

}  // namespace

TEST_CASE("resident ID check characters follow GB 11643", "[pii]") {
    // The standard's worked example and the published sample numbers.
    CHECK(resident_id_check_char("11010519491231002") == 'X');
    CHECK(resident_id_check_char("44052418800101001") == '4');
    CHECK(resident_id_valid("11010519491231002X"));
    CHECK(resident_id_valid("11010519491231002x"));
    CHECK_FALSE(resident_id_valid("110105194912310021"));
    CHECK_FALSE(resident_id_valid("99010519491231002X"));  // no such province (check recomputed below)
    std::mt19937_64 rng(7);
    for (int i = 0; i < 200; ++i) {
        const std::string id = valid_id(rng);
        CHECK(resident_id_check_char(id.substr(0, 17)) == id_check(id.substr(0, 17)));
        CHECK(resident_id_valid(id));
    }
}

TEST_CASE("valid resident IDs are found and masked, invalid ones are not", "[pii]") {
    std::mt19937_64 rng(11);
    for (int i = 0; i < 300; ++i) {
        const std::string id = valid_id(rng, i % 10 == 0);
        require_single("身份证号：", id, "，逾期记录无。", PiiType::ResidentId);
        require_single("ID number ", id, ".", PiiType::ResidentId);
        if (i % 20 == 0) require_single("证件 ", group(id, {6, 8, 4}, ' '), " 已核验", PiiType::ResidentId);

        // Wrong check character: no ID span, and nothing at all unless the 18 digits happen to be a
        // Luhn-valid card number.
        std::string bad = id.substr(0, 17) + (id[17] == 'X' ? std::string("0") : wrong_digit(id[17]));
        const std::vector<PiiSpan> spans = find_pii("身份证号：" + bad + "。");
        INFO("bad id " << bad);
        CHECK_FALSE(has_type(spans, PiiType::ResidentId));
        if (!luhn_ok(bad)) CHECK(spans.empty());
    }
    // Right check character but an impossible birth date or province.
    for (const std::string first17 : {"11010519490231002", "11010519491331002", "99010519491231002",
                                      "11010518991231002", "11010530001231002"}) {
        const std::string id = first17 + id_check(first17);
        INFO("implausible id " << id);
        CHECK_FALSE(resident_id_valid(id));
        CHECK_FALSE(has_type(find_pii("号码 " + id + " 。"), PiiType::ResidentId));
    }
    // Digits glued to letters or other digits are not an ID on their own.
    std::mt19937_64 rng2(3);
    const std::string id = valid_id(rng2);
    CHECK(find_pii("ab" + id).empty());
    CHECK_FALSE(has_type(find_pii("1" + id), PiiType::ResidentId));
}

TEST_CASE("mainland mobile numbers are found in their usual forms", "[pii]") {
    std::mt19937_64 rng(5);
    for (int i = 0; i < 200; ++i) {
        const std::string number = mobile(rng, "3456789");
        require_single("电话", number, "。", PiiType::Phone);
        require_single("call ", number, " now", PiiType::Phone);
        require_single("tel: ", "+86 " + number, ".", PiiType::Phone);
        require_single("tel: ", "+86-" + group(number, {3, 4, 4}, '-'), ".", PiiType::Phone);
        require_single("tel: ", "86" + number, ",", PiiType::Phone);
        require_single("tel: ", "0086 " + number, ",", PiiType::Phone);
        require_single("手机 ", group(number, {3, 4, 4}, ' '), " 联系", PiiType::Phone);

        // Second digit 0-2, one digit short or long: not a mobile number (and too short for a card).
        const std::string bad_prefix = mobile(rng, "012");
        CHECK(find_pii("电话" + bad_prefix + "。").empty());
        CHECK(find_pii("call " + number.substr(0, 10) + " now").empty());
        CHECK(find_pii("call " + number + std::string(1, char('0' + rng() % 10)) + " now").empty());
    }
    // Two numbers next to a year are found separately.
    const std::vector<PiiSpan> spans = find_pii("2024 13812345678 13987654321");
    REQUIRE(spans.size() == 2);
    CHECK(spans[0].type == PiiType::Phone);
    CHECK(spans[1].type == PiiType::Phone);
}

TEST_CASE("bank card numbers are found only when Luhn-valid", "[pii]") {
    CHECK(luhn_valid("4111111111111111"));
    CHECK(luhn_valid("79927398713"));
    CHECK_FALSE(luhn_valid("4111111111111112"));
    std::mt19937_64 rng(9);
    for (int i = 0; i < 300; ++i) {
        const int length = 13 + int(rng() % 7);
        const std::string card = valid_card(rng, length);
        require_single("卡号", card, "，", PiiType::BankCard);
        require_single("card ", card, ".", PiiType::BankCard);
        std::vector<int> fours;
        for (int left = length; left > 0; left -= 4) fours.push_back(std::min(left, 4));
        require_single("card ", group(card, fours, ' '), " expires", PiiType::BankCard);
        require_single("card ", group(card, fours, '-'), " expires", PiiType::BankCard);
        if (length == 15) require_single("amex ", group(card, {4, 6, 5}, ' '), ".", PiiType::BankCard);

        const std::string bad = card.substr(0, card.size() - 1) + wrong_digit(card.back());
        INFO("bad card " << bad);
        REQUIRE_FALSE(luhn_ok(bad));
        if (!test_id_valid(bad)) {
            CHECK(find_pii("卡号" + bad + "，").empty());
            CHECK(find_pii("card " + group(bad, fours, ' ') + " expires").empty());
        }
    }
    // Decimal numbers are not cards.
    CHECK(find_pii("pi = 3.1415926535897932384 exactly").empty());
}

TEST_CASE("e-mail and IP addresses are found; malformed ones are not", "[pii]") {
    for (const std::string email : {"zhang.san+tag@example.com.cn", "a_b@mail.qq.com", "X9@sub-domain.example.org",
                                    "13812345678@163.com"})
        require_single("联系 ", email, " 谢谢", PiiType::Email);
    for (const std::string bad : {"foo@bar", "foo@.com", "@example.com", "foo@example.c", "foo@-x.com", "a@b@"})
        CHECK(find_pii("mail " + bad + " please").empty());

    for (const std::string ip : {"192.168.1.23", "10.0.0.1", "8.8.8.8", "255.255.255.255", "0.0.0.0"})
        require_single("from ", ip, ", then", PiiType::Ipv4);
    for (const std::string bad : {"256.1.1.1", "1.2.3", "1.2.3.4.5", "1.2.3.4a", "1.2.3.1000"})
        CHECK(find_pii("at " + bad + " ok").empty());

    for (const std::string ip : {"2001:db8::8a2e:370:7334", "fe80::1", "::1", "::ffff:192.168.1.1",
                                 "2001:0db8:0000:0000:0000:ff00:0042:8329", "FE80::ABCD"})
        require_single("host ", ip, ". ok", PiiType::Ipv6);
    require_single("ip:", "2001:db8::1", " ok", PiiType::Ipv6);
    for (const std::string bad : {"2001:db8:::1", "12:30:45", "1:2:3:4:5:6:7:8:9", "std::vector", "a:b"})
        CHECK(find_pii("see " + bad + " here").empty());
}

TEST_CASE("masked text keeps no digit of the personal data", "[pii]") {
    std::mt19937_64 rng(21);
    std::string text = "客户资料：身份证号" + valid_id(rng) + "，手机+86 138 0013 8000，银行卡 " +
                       group(valid_card(rng, 16), {4, 4, 4, 4}, ' ') + "，邮箱 wang.wu@example.cn，登录 IP 203.0.113.9 与 " +
                       "2001:db8::42，备用卡" + valid_card(rng, 19) + "。";
    const std::vector<PiiSpan> spans = find_pii(text);
    CHECK(spans.size() == 7);
    std::string masked = mask_pii(text);
    for (const char* label : {"[IPv4]", "[IPv6]"}) {
        CHECK(masked.find(label) != std::string::npos);
        for (size_t at; (at = masked.find(label)) != std::string::npos;) masked.erase(at, std::string(label).size());
    }
    INFO(masked);
    CHECK(std::none_of(masked.begin(), masked.end(), [](char c) { return c >= '0' && c <= '9'; }));
    CHECK(masked.find("@") == std::string::npos);
    for (const char* label : {"●●●● [ID]", "●●●● [PHONE]", "●●●● [CARD]", "●●●● [EMAIL]"})
        CHECK(masked.find(label) != std::string::npos);
}

TEST_CASE("token mask covers exactly the tokens that overlap personal data", "[pii]") {
    attn::testing::CraftedSpec spec;
    spec.words = {"<s>", "Call", " 138", "1234", "5678 or", " mail", " li@x.cn", " now", ", ID ", "11010519491231002", "X."};
    spec.prompt_tokens = 8;
    const Session session = attn::testing::make_crafted_session(spec);
    const std::vector<bool> mask = token_pii_mask(session.tokens, session.text);
    const std::vector<bool> expected = {false, false, true, true, true, false, true, false, false, true, true};
    CHECK(mask == expected);
    const std::vector<PiiSpan> spans = find_pii(session.text);
    REQUIRE(spans.size() == 3);
    const std::vector<int> which = token_pii_spans(session.tokens, spans);
    CHECK(which == std::vector<int>{-1, -1, 0, 0, 0, -1, 1, -1, -1, 2, 2});
    CHECK(spans[0].type == PiiType::Phone);
    CHECK(spans[1].type == PiiType::Email);
    CHECK(spans[2].type == PiiType::ResidentId);
    // Tokens with an empty span (an added BOS) never overlap.
    std::vector<Token> tokens = session.tokens;
    tokens.insert(tokens.begin(), Token{0, 0, 0, false, true});
    CHECK(token_pii_mask(tokens, spans).front() == false);
}

TEST_CASE("masking is on by default and can be switched off", "[pii]") {
    const PrivacySettings saved = privacy_defaults();
    CHECK(PrivacySettings{}.mask_pii);
    set_privacy_defaults(PrivacySettings{true});
    CHECK(mask_pii_if_enabled("mail me: a@b.cn") == "mail me: ●●●● [EMAIL]");
    set_privacy_defaults(PrivacySettings{false});
    CHECK(mask_pii_if_enabled("mail me: a@b.cn") == "mail me: a@b.cn");
    set_privacy_defaults(saved);
}

TEST_CASE("differential-privacy noise has the stated scale", "[pii]") {
    constexpr size_t kSamples = 400000;
    auto moments = [](const std::vector<float>& values, double base) {
        double sum = 0, sum2 = 0;
        for (float v : values) {
            const double x = double(v) - base;
            sum += x;
            sum2 += x * x;
        }
        const double mean = sum / double(values.size());
        return std::pair{mean, std::sqrt(sum2 / double(values.size()) - mean * mean)};
    };

    SECTION("Laplace: b = sensitivity / epsilon, std = sqrt(2) b") {
        DpParams params;
        params.mechanism = DpMechanism::Laplace;
        params.epsilon = 0.5;
        params.sensitivity = 0.8;
        params.seed = 42;
        std::vector<float> values(kSamples, 0.25f);
        const DpNoiseReport report = add_dp_noise(values, params);
        CHECK(report.mechanism == "laplace");
        CHECK(report.scale == Approx(0.8 / 0.5));
        CHECK(report.stddev == Approx(std::sqrt(2.0) * 1.6));
        CHECK(report.values == kSamples);
        const auto [mean, stddev] = moments(values, 0.25);
        CHECK(std::fabs(mean) < 0.02);
        CHECK(stddev == Approx(std::sqrt(2.0) * 1.6).epsilon(0.02));
        // The shape: P(|x| > b) = e^-1 for Laplace (a Gaussian of the same std gives 0.32).
        const double tail = double(std::count_if(values.begin(), values.end(),
                                                 [](float v) { return std::fabs(double(v) - 0.25) > 1.6; })) /
                            double(kSamples);
        CHECK(tail == Approx(std::exp(-1.0)).epsilon(0.02));
    }
    SECTION("Gaussian, classic calibration: sigma = sensitivity sqrt(2 ln(1.25/delta)) / epsilon") {
        DpParams params;
        params.mechanism = DpMechanism::Gaussian;
        params.calibration = GaussianCalibration::Classic;
        params.epsilon = 0.5;
        params.delta = 1e-5;
        params.sensitivity = 0.1;
        params.seed = 7;
        std::vector<float> values(kSamples, 0.5f);
        const DpNoiseReport report = add_dp_noise(values, params);
        const double sigma = 0.1 * std::sqrt(2 * std::log(1.25 / 1e-5)) / 0.5;
        CHECK(report.scale == Approx(sigma));
        CHECK(report.stddev == Approx(sigma));
        const auto [mean, stddev] = moments(values, 0.5);
        CHECK(std::fabs(mean) < 0.01 * sigma);
        CHECK(stddev == Approx(sigma).epsilon(0.02));
    }
    SECTION("Gaussian, analytic calibration: the smallest sigma meeting delta exactly") {
        DpParams params;
        params.mechanism = DpMechanism::Gaussian;
        params.epsilon = 2.0;
        params.delta = 1e-6;
        params.sensitivity = 1.0;
        params.seed = 9;
        const DpNoiseReport report = dp_noise_parameters(params);
        const double sigma = report.scale;
        auto delta_of = [&](double s) {
            auto phi = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
            return phi(1 / (2 * s) - 2.0 * s) - std::exp(2.0) * phi(-1 / (2 * s) - 2.0 * s);
        };
        CHECK(delta_of(sigma) <= 1e-6 * (1 + 1e-9));
        CHECK(delta_of(sigma * 0.999) > 1e-6);
        // Tighter than the classic bound would be at this epsilon (which does not even hold for epsilon >= 1).
        CHECK(sigma < std::sqrt(2 * std::log(1.25 / 1e-6)) / 2.0 * 1.5);
        std::vector<float> values(kSamples, 0.0f);
        add_dp_noise(values, params);
        const auto [mean, stddev] = moments(values, 0.0);
        CHECK(std::fabs(mean) < 0.02 * sigma);
        CHECK(stddev == Approx(sigma).epsilon(0.02));
    }
    SECTION("same seed, same noise; bad parameters are refused") {
        DpParams params;
        params.seed = 3;
        std::vector<float> a(1000, 0.5f), b(1000, 0.5f), c(1000, 0.5f);
        add_dp_noise(a, params);
        add_dp_noise(b, params);
        params.seed = 4;
        add_dp_noise(c, params);
        CHECK(a == b);
        CHECK(a != c);
        params.clamp_to_unit = true;
        add_dp_noise(c, params);
        CHECK(std::all_of(c.begin(), c.end(), [](float v) { return v >= 0 && v <= 1; }));

        DpParams bad;
        bad.epsilon = 0;
        CHECK_THROWS_WITH(dp_noise_parameters(bad), Catch::Contains("epsilon"));
        bad.epsilon = 1;
        bad.sensitivity = -1;
        CHECK_THROWS_WITH(dp_noise_parameters(bad), Catch::Contains("sensitivity"));
        bad.sensitivity = 1;
        bad.mechanism = DpMechanism::Gaussian;
        bad.delta = 0;
        CHECK_THROWS_WITH(dp_noise_parameters(bad), Catch::Contains("delta"));
        bad.delta = 1e-5;
        bad.epsilon = 2;
        bad.calibration = GaussianCalibration::Classic;
        CHECK_THROWS_WITH(dp_noise_parameters(bad), Catch::Contains("epsilon < 1"));
    }
}
