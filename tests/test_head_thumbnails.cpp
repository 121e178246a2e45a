// Head grid thumbnails (engine/head_thumbnails.h) on hand-crafted heads whose picture is known.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>

#include "engine/head_thumbnails.h"
#include "tests/crafted_session.h"

using namespace attn;

namespace {

// Layer 0: head 0 looks at the previous token, head 1 at the first token (a sink).
Session previous_and_sink(int64_t n) {
    testing::CraftedSpec spec;
    spec.words.assign(static_cast<size_t>(n), "w");
    for (int64_t i = 0; i < n; ++i) {
        char word[16];  // snprintf: `"w" + std::to_string(…)` trips GCC 12's false -Wrestrict
        std::snprintf(word, sizeof word, "w%d ", static_cast<int>(i % 50));
        spec.words[static_cast<size_t>(i)] = word;
    }
    spec.n_layer = 1;
    spec.focus = [](int, int head, int64_t q) {
        if (q == 0) return std::vector<int64_t>{0};
        return head == 0 ? std::vector<int64_t>{q - 1} : std::vector<int64_t>{0};
    };
    Session session = testing::make_crafted_session(spec);
    rebuild_overview(*session.capture, 1);  // as every captured or loaded session has it
    return session;
}

}  // namespace

TEST_CASE("matrix thumbnails show the diagonal of a previous-token head and the column of a sink", "[heads]") {
    for (const int64_t n : {int64_t(200), int64_t(700)}) {  // exact, then from the overview (128-token blocks)
        INFO("positions " << n);
        const Session session = previous_and_sink(n);
        const CpuTileSource source(*session.capture, 1);
        const std::vector<HeadThumbnail> thumbs = matrix_thumbnails(source, *session.capture, n, 24, 1);
        REQUIRE(thumbs.size() == 2);
        const int cells = n <= kExactThumbnailPositions ? 24 : static_cast<int>((n + 127) / 128);
        for (const HeadThumbnail& t : thumbs) {
            REQUIRE(t.rows == cells);
            REQUIRE(t.cols == cells);
            for (int r = 0; r < cells; ++r)
                for (int c = r + 1; c < cells; ++c) CHECK(std::isnan(t.max[size_t(r) * cells + c]));  // above the diagonal
        }
        const HeadThumbnail& previous = thumbs[0];
        const HeadThumbnail& sink = thumbs[1];
        for (int r = 1; r < cells; ++r) {
            CHECK(previous.max[size_t(r) * cells + r] > 0.99f);  // the diagonal band
            CHECK(sink.max[size_t(r) * cells + 0] > 0.99f);      // the first column
            if (r >= 2) {
                CHECK(previous.max[size_t(r) * cells + 0] < 0.01f);  // far from the diagonal: nothing
                CHECK(sink.max[size_t(r) * cells + r - 1] < 0.01f);
            }
        }
    }
}

TEST_CASE("row thumbnails bin one query's row by key", "[heads]") {
    const Session session = previous_and_sink(700);
    const CpuTileSource source(*session.capture, 1);
    const std::vector<HeadThumbnail> thumbs = row_thumbnails(source, *session.capture, 699, 20, 1);
    REQUIRE(thumbs[0].rows == 1);
    REQUIRE(thumbs[0].cols == 20);
    CHECK(thumbs[0].max[19] > 0.99f);  // previous token: the last bin
    CHECK(thumbs[0].max[0] < 0.01f);
    CHECK(thumbs[1].max[0] > 0.99f);   // sink: the first bin
    CHECK(thumbs[1].max[19] < 0.01f);
    CHECK_THROWS_WITH(row_thumbnails(source, *session.capture, 700, 20, 1), Catch::Contains("not captured"));
}
