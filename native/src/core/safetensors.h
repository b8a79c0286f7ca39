// Memory-mapped safetensors reader (one file, or a sharded folder with model.safetensors.index.json)
// and a small writer. Tensors are TensorViews into the mapping: weights are never copied.
//
// File layout: u64 little-endian N | N bytes of JSON header | data region.
// Header: {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// with offsets relative to the start of the data region.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace mixq {

// The format caps headers at 100 MB; a file of more tensors than this is refused before it costs memory (a header
// entry takes ~60 bytes, its view ~300: a million tensors is more than any checkpoint's single file holds).
constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t(100) << 20;
constexpr size_t kMaxSafetensorsTensors = size_t(1) << 20;
constexpr size_t kMaxTensorRank = 8;

// "" when dtype × shape fills exactly `span` bytes, else what it needs ("needs 73786976294838206464 bytes", "needs
// more than 2^128 bytes"): computed without wrapping, so absurd shapes get a true message.
std::string safetensors_size_error(DType dtype, const std::vector<int64_t>& shape, size_t span);

// A read-only mmap of a whole file; unmapped by the destructor.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws mixq::Error naming the path (also when not a regular file)
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

// One parsed and validated safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`: header length vs file size, JSON, known dtypes, shapes, offsets
  // inside the data region, size == numel * dtype size, no overlaps. Errors name the file and tensor.
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return map_->path(); }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<MappedFile> map_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model folder: DIR/model.safetensors, or the shards listed by
// DIR/model.safetensors.index.json (every shard named there must exist and hold its tensors).
class WeightStore {
 public:
  static std::unique_ptr<WeightStore> open(const std::string& model_dir);
  const TensorView* find(const std::string& name) const;  // nullptr when absent
  // Throws mixq::Error "tensor NAME not found in DIR (...)" when absent.
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  size_t total_bytes() const;  // sum of tensor bytes
  const std::string& dir() const { return dir_; }
  const std::string& source() const { return source_; }  // the index or the single file

 private:
  std::string dir_;
  std::string source_;  // "model.safetensors" or "model.safetensors.index.json" (for messages)
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

// Parses a dtype name as written in headers ("BF16", "F32", ...); false when unknown.
bool parse_dtype(const std::string& s, DType* out);

// Writes tensors (their data/nbytes/dtype/shape) to `path` as a safetensors file.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace mixq
