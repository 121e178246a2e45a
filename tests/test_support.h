#pragma once
#include <sys/wait.h>

#include <cstdlib>
// Helpers shared by the test files: fixture paths, whole-file reads, scratch directories, running
// the attnscope executable.
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace attn::testing {

inline std::string fixture_path(const std::string& relative) {
    return std::string(ATTNSCOPE_FIXTURES_DIR) + "/" + relative;
}

// Whole file as text; empty if it can't be read (callers check what they expect).
inline std::string read_file_string(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::vector<std::byte> read_file_bytes(const std::string& path) {
    const std::string raw = read_file_string(path);
    std::vector<std::byte> bytes(raw.size());
    std::memcpy(bytes.data(), raw.data(), raw.size());
    return bytes;
}

// Little-endian float32 values, as the fixture scripts write them.
inline std::vector<float> read_f32_file(const std::string& path) {
    const std::string raw = read_file_string(path);
    std::vector<float> values(raw.size() / sizeof(float));
    std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
    return values;
}

// A fresh directory under the system temp directory, removed with the object.
class TempDir {
public:
    explicit TempDir(const std::string& name) {
        static int counter = 0;
        root_ = std::filesystem::temp_directory_path() /
                ("attnscope_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name);
        std::filesystem::remove_all(root_);
        std::filesystem::create_directories(root_);
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(root_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string path() const { return root_.string(); }
    std::string file(const std::string& name) const { return (root_ / name).string(); }

private:
    std::filesystem::path root_;
};

// The attnscope executable under test ($ATTNSCOPE_BIN, set by CTest; else the build folder's).
inline std::string attnscope_binary() {
    const char* bin = std::getenv("ATTNSCOPE_BIN");
    return bin ? bin : std::string(ATTNSCOPE_SOURCE_DIR) + "/build/attnscope";
}

struct CliResult {
    int exit_code = -1;
    std::string out, err;
};

// Runs `attnscope ARGS` (a shell command line) with stdin closed; captures exit code, stdout, stderr.
inline CliResult run_cli(const std::string& args) {
    TempDir dir("cli");
    const std::string out = dir.file("stdout"), err = dir.file("stderr");
    const int status = std::system((attnscope_binary() + " " + args + " >" + out + " 2>" + err + " </dev/null").c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file_string(out), read_file_string(err)};
}

}  // namespace attn::testing
