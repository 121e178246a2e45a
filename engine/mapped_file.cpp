#include "engine/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace attn {

namespace {

// Closes the descriptor on every exit path; the mapping stays valid after close.
struct FileDescriptor {
    int fd = -1;
    ~FileDescriptor() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    FileDescriptor file;
    do {
        file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (file.fd < 0 && errno == EINTR);
    if (file.fd < 0) fail("cannot open '", path, "': ", std::strerror(errno));

    struct stat info {};
    if (::fstat(file.fd, &info) != 0) fail("cannot stat '", path, "': ", std::strerror(errno));
    if (S_ISDIR(info.st_mode)) fail("cannot map '", path, "': it is a directory");
    if (!S_ISREG(info.st_mode)) fail("cannot map '", path, "': not a regular file");

    size_ = static_cast<size_t>(info.st_size);
    // mmap rejects a zero length, and an empty file has nothing to map anyway.
    if (size_ == 0) return;

    void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd, 0);
    if (mapping == MAP_FAILED) fail("cannot map '", path, "' (", size_, " bytes): ", std::strerror(errno));
    data_ = static_cast<const std::byte*>(mapping);
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace attn
