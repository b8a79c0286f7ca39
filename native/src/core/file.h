// Opening the files a model folder names. Only regular files are read (symlinks followed): a FIFO would block the
// reader forever and /dev/zero never ends, so both are refused with a message naming the file and what it is.
// Reads are capped: a JSON file of a model folder is small, and a larger one is a mistake or an attack.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace mixq {

constexpr size_t kMiB = size_t(1) << 20;
// config.json, generation_config.json, model.safetensors.index.json.
constexpr size_t kMaxJsonFileBytes = 64 * kMiB;
// tokenizer.json (the largest published ones are ~35 MiB) and other files copied from a model folder.
constexpr size_t kMaxTokenizerFileBytes = 256 * kMiB;

// True when something (of any type) exists at `path`, symlinks followed.
bool path_exists(const std::string& path);

// Opens `path` read-only without blocking (opening a FIFO does not wait for a writer) and checks that it is a regular
// file of at most `max_bytes`. Returns the descriptor (the caller closes it) and the size in *size.
// Throws mixq::Error: "PATH: is a FIFO (named pipe), not a regular file", "PATH: 200 MiB exceeds the 64 MiB limit for
// WHAT", "PATH: cannot open: No such file or directory".
int open_regular_file(const std::string& path, size_t max_bytes, const std::string& what, size_t* size);

// The whole content of a regular file of at most `max_bytes` (see open_regular_file).
std::string read_regular_file(const std::string& path, size_t max_bytes, const std::string& what);

}  // namespace mixq
