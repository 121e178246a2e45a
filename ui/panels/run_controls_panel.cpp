#include "ui/panels/run_controls_panel.h"

#include <imgui.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "engine/tokenizer.h"

namespace attn::panels {

namespace {

// ImGui 1.86 has no std::string overloads: a growing buffer that writes back on edit.
bool input_multiline(const char* label, std::string& text, float height) {
    std::vector<char> buffer(text.begin(), text.end());
    buffer.resize(std::max<size_t>(text.size() * 2 + 1024, 4096), '\0');
    if (!ImGui::InputTextMultiline(label, buffer.data(), buffer.size(), ImVec2(-1, height))) return false;
    text.assign(buffer.data());
    return true;
}

bool input_line(const char* label, std::string& text) {
    std::vector<char> buffer(text.begin(), text.end());
    buffer.resize(text.size() + 256, '\0');
    if (!ImGui::InputText(label, buffer.data(), buffer.size())) return false;
    text.assign(buffer.data());
    return true;
}

}  // namespace

GenerationRequest request_from(const RunControlsState& state) {
    GenerationRequest request;
    request.prompt = state.prompt;
    request.sampling = state.sampling;
    request.sampling.chat = state.chat;
    request.capture = true;
    return request;
}

void draw_run_controls_panel(LiveRunner& runner, const LiveStatus& status, RunControlsState& state) {
    const bool prefilling = status.state == LiveState::Prefilling;
    const bool running = status.state == LiveState::Running;
    const bool ready = status.state == LiveState::Paused;

    ImGui::TextDisabled("prompt");
    input_multiline("##prompt", state.prompt, ImGui::GetTextLineHeight() * 5);
    ImGui::Checkbox("chat template", &state.chat);
    ImGui::SameLine();
    if (ImGui::Button(status.state == LiveState::Empty ? "Start" : "Restart")) runner.start(request_from(state));
    input_line("##textfile", state.text_file);
    ImGui::SameLine();
    if (ImGui::Button("Open text file")) {
        std::ifstream in(state.text_file, std::ios::binary);
        std::ostringstream text;
        if (in) text << in.rdbuf();
        if (!in) state.note = "cannot read " + state.text_file;
        else if (first_invalid_utf8(text.str()) != std::string::npos) state.note = state.text_file + " is not valid UTF-8";
        else state.prompt = text.str(), state.note.clear();
    }
    if (!state.note.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.4f, 1), "%s", state.note.c_str());

    if (prefilling) {
        const float done = status.prefill_total > 0 ? float(status.prefill_done) / float(status.prefill_total) : 0.f;
        char label[64];
        std::snprintf(label, sizeof label, "prefill %lld / %lld", static_cast<long long>(status.prefill_done),
                      static_cast<long long>(status.prefill_total));
        ImGui::ProgressBar(done, ImVec2(-80, 0), label);
        ImGui::SameLine();
        if (ImGui::Button("Cancel")) runner.cancel();
    }

    ImGui::BeginDisabled(!ready);
    if (ImGui::Button("Step")) runner.step(1);
    ImGui::SameLine();
    if (ImGui::Button("Run")) runner.run();
    ImGui::EndDisabled();
    ImGui::SameLine();
    ImGui::BeginDisabled(!running);
    if (ImGui::Button("Pause")) runner.pause();
    ImGui::EndDisabled();

    ImGui::BeginDisabled(!ready);
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 5);
    ImGui::InputInt("##runto", &state.run_to_steps);
    state.run_to_steps = std::max(1, state.run_to_steps);
    ImGui::SameLine();
    if (ImGui::Button("Run N tokens")) {
        RunGoal goal;
        goal.steps = state.run_to_steps;
        runner.run(goal);
    }
    ImGui::SetNextItemWidth(ImGui::GetFontSize() * 8);
    input_line("##stop", state.stop_string);
    ImGui::SameLine();
    if (ImGui::Button("Run to text") && !state.stop_string.empty()) {
        RunGoal goal;
        goal.stop_string = state.stop_string;
        runner.run(goal);
    }
    ImGui::EndDisabled();

    ImGui::TextColored(status.state == LiveState::Failed ? ImVec4(1, 0.45f, 0.4f, 1) : ImVec4(0.7f, 0.85f, 1, 1), "%s: %s",
                       to_string(status.state), status.message.c_str());
    ImGui::TextDisabled("backend %s  steps %lld  branch %zu/%zu", status.backend.c_str(),
                        static_cast<long long>(status.steps), status.branch + (status.branches ? 1 : 0), status.branches);

    if (ImGui::TreeNode("Sampling (applies from the next step)")) {
        SamplingSettings& s = state.sampling;
        ImGui::Checkbox("greedy", &s.greedy);
        ImGui::BeginDisabled(s.greedy);
        ImGui::SliderFloat("temperature", &s.temperature, 0.05f, 2.0f);
        ImGui::SliderInt("top-k", &s.top_k, 0, 200);
        ImGui::SliderFloat("top-p", &s.top_p, 0.05f, 1.0f);
        int seed = static_cast<int>(s.seed);
        if (ImGui::InputInt("seed", &seed)) s.seed = static_cast<uint64_t>(std::max(0, seed));
        ImGui::EndDisabled();
        ImGui::SliderInt("token budget", &s.max_new_tokens, 1, 4096);
        ImGui::SliderInt("beams (on restart)", &s.beams, 1, 8);
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("beam search runs after the prompt; the steps then replay its best hypothesis");
        if (ImGui::Button("Apply")) runner.set_sampling(s);
        ImGui::TreePop();
    }
}

}  // namespace attn::panels
