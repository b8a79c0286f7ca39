#include "file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "error.h"

namespace mixq {

namespace {

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

std::string size_str(uint64_t bytes) {
  if (bytes >= kMiB && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + " MiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

int open_regular_file(const std::string& path, size_t max_bytes, const std::string& what, size_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": is " + std::string(file_type(st.st_mode)) + ", not a regular file (" + what +
                " must be a regular file)");
  }
  if (uint64_t(st.st_size) > max_bytes) {
    ::close(fd);
    throw Error(path + ": " + size_str(uint64_t(st.st_size)) + " exceeds the " + size_str(max_bytes) + " limit for " + what);
  }
  // Regular files never block; clear O_NONBLOCK anyway so that reads behave as usual.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  *size = size_t(st.st_size);
  return fd;
}

std::string read_regular_file(const std::string& path, size_t max_bytes, const std::string& what) {
  size_t size = 0;
  const int fd = open_regular_file(path, max_bytes, what, &size);
  std::string out;
  // Read until EOF, but never past the cap: a file that grows while read (or /proc-style files that report size 0)
  // cannot make this unbounded.
  out.resize(size + 1);
  size_t got = 0;
  for (;;) {
    if (got == out.size()) {
      if (out.size() > max_bytes) break;
      out.resize(std::min(max_bytes + 1, out.size() * 2 + 4096));
    }
    const ssize_t n = ::read(fd, &out[got], out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      throw Error(path + ": read failed: " + std::strerror(e));
    }
    if (n == 0) break;
    got += size_t(n);
  }
  ::close(fd);
  if (got > max_bytes) throw Error(path + ": more than " + size_str(max_bytes) + " (the limit for " + what + ")");
  out.resize(got);
  return out;
}

}  // namespace mixq
