#pragma once
// A private X server (Xvfb) for the debugger's --headless runs of the full UI (panels included)
// and for tests: started on a free display number (-displayfd), killed with the object.
#include <optional>
#include <string>
#include <sys/types.h>

namespace attn::app {

// The executable on $PATH, if any.
std::optional<std::string> find_in_path(const std::string& name);

class PrivateDisplay {
public:
    // Starts `xvfb` (a path) with one screen of width × height × 24; display() is empty if it failed.
    PrivateDisplay(const std::string& xvfb, int width, int height);
    ~PrivateDisplay();
    PrivateDisplay(const PrivateDisplay&) = delete;
    PrivateDisplay& operator=(const PrivateDisplay&) = delete;
    const std::string& display() const { return display_; }  // ":N"

private:
    pid_t pid_ = -1;
    std::string display_;
};

}  // namespace attn::app
