#pragma once
// Load a model from the debugger: a path (GGUF file or Hugging Face directory; empty = the default
// model) loaded on a background thread — the UI keeps its frame rate while the weights are read —
// and handed to the caller when ready, which restarts the live run on it. Errors (no such file,
// a malformed model, an unknown architecture) are shown in the panel, never thrown.
#include <future>
#include <memory>
#include <string>

#include "engine/model.h"

namespace attn::panels {

struct ModelLoaderState {
    std::string path;
    std::string loaded_name;  // what is running now
    std::string note;         // the last error
    std::future<std::unique_ptr<Model>> loading;
    std::string loading_path;
};

// Starts loading `path` in the background (resolve_model_path rules). A load already running
// is left to finish and its result dropped.
void start_model_load(ModelLoaderState& state, const std::string& path);

void draw_model_loader_panel(ModelLoaderState& state);

// Polled once per frame: the model when its load finished, else nullptr; a failed load leaves
// its reason in state.note.
std::unique_ptr<Model> take_loaded_model(ModelLoaderState& state);

}  // namespace attn::panels
