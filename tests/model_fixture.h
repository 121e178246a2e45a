#pragma once
// Shared test access to the default model: loaded once per test process, or absent (with a
// visible warning) when the models cache doesn't hold it.
#include <filesystem>
#include <memory>

#include "engine/model.h"

namespace attn::testing {

// nullptr when the default model isn't in the cache; the caller WARNs and returns.
inline const Model* default_model() {
    static std::unique_ptr<Model> model = [] {
        const std::string path = default_model_path();
        return std::filesystem::exists(path) ? Model::load(path) : nullptr;
    }();
    return model.get();
}

}  // namespace attn::testing

#define REQUIRE_DEFAULT_MODEL_OR_SKIP(model)                                                             \
    const attn::Model* model = attn::testing::default_model();                                           \
    if (!model) {                                                                                        \
        WARN("SKIPPED: default model not found at " << attn::default_model_path()                       \
                                                    << " (run scripts/fetch_model.sh)");                 \
        return;                                                                                          \
    }
