// Chat templates recognised by signature and rendered natively (no Jinja interpreter).
// What each family renders is documented at Tokenizer::apply_chat_template.
#include <string>
#include <string_view>

#include "engine/error.h"
#include "engine/tokenizer_internal.h"

namespace attn::detail {

namespace {

constexpr const char* kSupportedFamilies =
    "ChatML (<|im_start|>, incl. a default system message such as SmolLM2's or Qwen2's), "
    "Llama 2 ([INST] with <<SYS>>), Llama 3 (<|start_header_id|>, without the 3.1 tool/date preamble), "
    "Mistral ([INST] without <<SYS>>)";

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

// Jinja's strip()/trim: Python str.strip() on ASCII whitespace.
std::string strip(std::string_view text) {
    constexpr std::string_view whitespace = " \t\n\r\f\v";
    const size_t first = text.find_first_not_of(whitespace);
    if (first == std::string_view::npos) return {};
    const size_t last = text.find_last_not_of(whitespace);
    return std::string(text.substr(first, last - first + 1));
}

// The body of a Jinja string literal as written (no quotes around it) → its value, or
// nullopt if the text is not a plain literal (holds quotes or template syntax).
std::optional<std::string> unescape_literal(std::string_view body) {
    std::string out;
    for (size_t i = 0; i < body.size(); ++i) {
        const char c = body[i];
        if (c == '\'' || c == '"' || c == '{' || c == '}') return std::nullopt;
        if (c != '\\') {
            out += c;
            continue;
        }
        if (++i >= body.size()) return std::nullopt;
        switch (body[i]) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case '\\': out += '\\'; break;
            case '\'': out += '\''; break;
            case '"': out += '"'; break;
            default: return std::nullopt;
        }
    }
    return out;
}

// A ChatML template that writes a fixed system turn when the conversation has none
// ('<|im_start|>system\nYou are ...<|im_end|>\n' as one literal) → that system text.
std::optional<std::string> chatml_default_system(std::string_view source) {
    constexpr std::string_view open = "<|im_start|>system";
    constexpr std::string_view close = "<|im_end|>";
    for (size_t at = source.find(open); at != std::string_view::npos; at = source.find(open, at + 1)) {
        size_t body = at + open.size();
        if (source.substr(body, 1) == "\n") body += 1;
        else if (source.substr(body, 2) == "\\n") body += 2;
        else continue;
        const size_t end = source.find(close, body);
        if (end == std::string_view::npos) break;
        if (auto text = unescape_literal(source.substr(body, end - body))) return text;
    }
    return std::nullopt;
}

// The value of the Jinja string literal that starts after its opening `quote` at `body`;
// nullopt if it does not end or holds an escape we do not know.
std::optional<std::string> read_literal(std::string_view source, size_t body, char quote) {
    std::string out;
    for (size_t i = body; i < source.size(); ++i) {
        const char c = source[i];
        if (c == quote) return out;
        if (c != '\\') {
            out += c;
            continue;
        }
        if (++i >= source.size()) return std::nullopt;
        switch (source[i]) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case '\\': case '\'': case '"': out += source[i]; break;
            default: return std::nullopt;
        }
    }
    return std::nullopt;
}

// Llama 2 templates may set a default: {% set system_message = '...' %}.
std::optional<std::string> llama2_default_system(std::string_view source) {
    for (const char quote : {'\'', '"'}) {
        const std::string marker = std::string("set system_message = ") + quote;
        if (const size_t at = source.find(marker); at != std::string_view::npos)
            return read_literal(source, at + marker.size(), quote);
    }
    return std::nullopt;
}

void require_alternation(std::span<const ChatMessage> messages, size_t first, const char* family) {
    for (size_t i = first; i < messages.size(); ++i) {
        const bool expect_user = (i - first) % 2 == 0;
        const std::string& role = messages[i].role;
        if (role != "user" && role != "assistant")
            fail(family, " chat template: message ", i, " has role \"", role,
                 "\"; only an optional first system message, then user and assistant, are supported");
        if ((role == "user") != expect_user)
            fail(family, " chat template: conversation roles must alternate user/assistant/user/... (message ", i,
                 " is \"", role, "\")");
    }
}

}  // namespace

ChatTemplate ChatTemplate::recognise(const std::string& source, std::string bos_text, std::string eos_text) {
    ChatTemplate t;
    t.bos_text_ = std::move(bos_text);
    t.eos_text_ = std::move(eos_text);
    if (contains(source, "<|im_start|>") && contains(source, "<|im_end|>")) {
        t.family_ = ChatFamily::ChatML;
        t.default_system_ = chatml_default_system(source);
    } else if (contains(source, "<|start_header_id|>") && contains(source, "<|eot_id|>")) {
        if (contains(source, "Cutting Knowledge Date"))
            fail("unsupported chat template: the Llama 3.1+ template with the tool/date preamble (supported: ",
                 kSupportedFamilies, ")");
        t.family_ = ChatFamily::Llama3;
    } else if (contains(source, "[INST]") && contains(source, "<<SYS>>")) {
        t.family_ = ChatFamily::Llama2;
        t.default_system_ = llama2_default_system(source);
    } else if (contains(source, "[INST]")) {
        t.family_ = ChatFamily::Mistral;
        t.mistral_space_before_inst_ = contains(source, "' [INST] '");
        t.mistral_space_before_answer_ = contains(source, "' ' + message['content'] + eos_token");
        // Templates that accept a system message fold it into the first user turn.
        t.mistral_accepts_system_ = contains(source, "system_message");
    } else {
        fail("unsupported chat template (supported: ", kSupportedFamilies, ")");
    }
    return t;
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
    std::string out;
    const bool has_system = !messages.empty() && messages[0].role == "system";
    switch (family_) {
        case ChatFamily::ChatML: {
            if (!messages.empty() && !has_system && default_system_)
                out += "<|im_start|>system\n" + *default_system_ + "<|im_end|>\n";
            for (const auto& message : messages)
                out += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
            if (add_generation_prompt) out += "<|im_start|>assistant\n";
            break;
        }
        case ChatFamily::Llama3: {
            for (size_t i = 0; i < messages.size(); ++i) {
                if (i == 0) out += bos_text_;
                out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
                       strip(messages[i].content) + "<|eot_id|>";
            }
            if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        }
        case ChatFamily::Llama2: {
            // The template has no generation prompt: "[/INST]" already asks for the answer.
            const size_t first = has_system ? 1 : 0;
            require_alternation(messages, first, "Llama 2");
            std::optional<std::string> system;
            if (has_system) system = messages[0].content;
            else system = default_system_;
            for (size_t i = first; i < messages.size(); ++i) {
                std::string content = messages[i].content;
                if (i == first && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
                if (messages[i].role == "user") {
                    out += bos_text_;
                    out += "[INST] ";
                    out += strip(content);
                    out += " [/INST]";
                } else {
                    out += ' ';
                    out += strip(content);
                    out += ' ';
                    out += eos_text_;
                }
            }
            break;
        }
        case ChatFamily::Mistral: {
            const size_t first = has_system ? 1 : 0;
            if (has_system && !mistral_accepts_system_)
                fail("Mistral chat template: this template does not accept a system message");
            require_alternation(messages, first, "Mistral");
            out += bos_text_;
            for (size_t i = first; i < messages.size(); ++i) {
                if (messages[i].role == "user") {
                    std::string content = messages[i].content;
                    if (i == first && has_system) content = messages[0].content + "\n\n" + content;
                    out += (mistral_space_before_inst_ ? " [INST] " : "[INST] ") + content + " [/INST]";
                } else {
                    out += (mistral_space_before_answer_ ? " " : "") + messages[i].content + eos_text_;
                }
            }
            break;
        }
    }
    return out;
}

}  // namespace attn::detail
