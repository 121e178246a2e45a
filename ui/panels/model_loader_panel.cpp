#include "ui/panels/model_loader_panel.h"

#include <imgui.h>

#include <chrono>
#include <vector>

namespace attn::panels {

void start_model_load(ModelLoaderState& state, const std::string& path) {
    state.note.clear();
    state.loading_path = path.empty() ? "the default model" : path;
    state.loading = std::async(std::launch::async, [path] { return Model::load(resolve_model_path(path)); });
}

std::unique_ptr<Model> take_loaded_model(ModelLoaderState& state) {
    if (!state.loading.valid() || state.loading.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
        return nullptr;
    try {
        std::unique_ptr<Model> model = state.loading.get();
        state.loaded_name = model->identity.name;
        return model;
    } catch (const std::exception& e) {
        state.note = e.what();
        return nullptr;
    }
}

void draw_model_loader_panel(ModelLoaderState& state) {
    ImGui::TextDisabled("model: %s", state.loaded_name.c_str());
    std::vector<char> buffer(state.path.begin(), state.path.end());
    buffer.resize(state.path.size() + 512, '\0');
    ImGui::SetNextItemWidth(-ImGui::GetFontSize() * 4);
    if (ImGui::InputTextWithHint("##modelpath", "GGUF file or HF directory (empty: default)", buffer.data(), buffer.size()))
        state.path.assign(buffer.data());
    ImGui::SameLine();
    const bool loading = state.loading.valid();
    ImGui::BeginDisabled(loading);
    if (ImGui::Button("Load")) start_model_load(state, state.path);
    ImGui::EndDisabled();
    if (loading) ImGui::TextDisabled("loading %s…", state.loading_path.c_str());
    if (!state.note.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.note.c_str());
}

}  // namespace attn::panels
