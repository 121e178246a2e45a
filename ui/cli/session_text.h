#pragma once
// How the CLI shows a session's tokens and summary (text and JSON).
#include <nlohmann/json.hpp>
#include <string>

#include "engine/session.h"

namespace attn::cli {

std::string token_bytes_of(const Session& session, int64_t position);
std::string token_display(const Session& session, int64_t position);  // quoted, escaped
nlohmann::json token_json(const Session& session, int64_t position);
nlohmann::json session_json(const Session& session);
void print_summary(const Session& session);

}  // namespace attn::cli
