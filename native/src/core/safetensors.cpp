#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "error.h"
#include "file.h"
#include "json.h"

namespace mixq {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  size_t size = 0;
  // Regular files only (a FIFO would block, a device never ends); weights have no size cap but the address space.
  const int fd = open_regular_file(path, SIZE_MAX, "a safetensors file", &size);
  size_ = size;
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(path + ": mmap failed: " + std::strerror(e));
    }
    data_ = static_cast<const unsigned char*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
}

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I32", DType::I32},
      {"I64", DType::I64}, {"U8", DType::U8},   {"I8", DType::I8},     {"F64", DType::F64},
      {"BOOL", DType::BOOL}};
  for (const auto& kv : kNames) {
    if (s == kv.first) {
      *out = kv.second;
      return true;
    }
  }
  return false;
}

namespace {

std::string u128_str(unsigned __int128 v) {
  if (v == 0) return "0";
  std::string s;
  for (; v > 0; v /= 10) s.insert(s.begin(), char('0' + int(v % 10)));
  return s;
}

// The first bytes of a file that is not a safetensors file, for the message ("it starts with "hello wo"").
std::string printable_start(const unsigned char* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && i < 16; ++i) {
    if (p[i] == '\n' || p[i] == '\r' || p[i] == '\t') s += ' ';
    else if (p[i] >= 0x20 && p[i] < 0x7f) s += char(p[i]);
    else return "";
  }
  return s;
}

}  // namespace

std::string safetensors_size_error(DType dtype, const std::vector<int64_t>& shape, size_t span) {
  // numel × element size in 128 bits, each step checked: a product that wraps (e.g. [2^62, 2^62, 16]) must not
  // pass for a small one. Any zero dimension makes it 0 whatever the others are.
  for (int64_t d : shape)
    if (d == 0) return span == 0 ? "" : "needs 0 bytes";
  unsigned __int128 need = dtype_size(dtype);
  bool overflow = false;
  for (int64_t d : shape) {
    unsigned __int128 next;
    if (__builtin_mul_overflow(need, (unsigned __int128)uint64_t(d), &next)) {
      overflow = true;
      break;
    }
    need = next;
  }
  if (overflow) return "needs more than 2^128 bytes";
  if (need == (unsigned __int128)span) return "";
  return "needs " + u128_str(need) + " bytes";
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(std::make_shared<MappedFile>(path)) {
  const size_t file_size = map_->size();
  if (file_size < 8) {
    throw Error(path + ": truncated safetensors file (" + std::to_string(file_size) +
                " bytes, the 8-byte header length is missing)");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_->data()[i];
  const std::string text = printable_start(map_->data(), std::min<size_t>(file_size, 16));
  const bool looks_like_text = text.size() >= 8;  // a real header length has zero bytes at its top
  if (header_len > kMaxSafetensorsHeaderBytes || header_len > file_size - 8) {
    if (looks_like_text) {
      throw Error(path + ": not a safetensors file (it starts with the text \"" + text +
                  "\", not an 8-byte header length)");
    }
    if (header_len > kMaxSafetensorsHeaderBytes) {
      throw Error(path + ": corrupt safetensors file: header length " + std::to_string(header_len) +
                  " exceeds the format's 100 MB limit");
    }
    throw Error(path + ": truncated or corrupt safetensors file: header length " + std::to_string(header_len) +
                " exceeds the file size (" + std::to_string(file_size) + " bytes)");
  }
  if (header_len == 0 || map_->data()[8] != '{') {
    throw Error(path + ": not a safetensors file (the " + std::to_string(header_len) +
                "-byte header after the length is not a JSON object)");
  }
  const char* header = reinterpret_cast<const char*>(map_->data() + 8);
  const unsigned char* data_region = map_->data() + 8 + header_len;
  const size_t data_size = file_size - 8 - size_t(header_len);

  // Parsed one entry at a time: memory follows the tensors kept (a view each), never a tree of the whole header.
  struct Span { size_t begin, end; size_t tensor; };
  std::vector<Span> spans;
  parse_json_object_members(header, size_t(header_len), path + " (safetensors header)", kMaxSafetensorsTensors + 1,
                            [&](std::string&& name, JsonValue&& desc) {
    const std::string where = path + ": tensor " + name;
    if (name == "__metadata__") {
      if (!desc.is_object()) throw Error(path + ": __metadata__ is not an object");
      for (const auto& [k, v] : desc.as_object()) metadata_[k] = v.is_string() ? v.as_string() : std::string();
      return;
    }
    if (tensors_.size() >= kMaxSafetensorsTensors) {
      throw Error(path + ": more than " + std::to_string(kMaxSafetensorsTensors) + " tensors in one file (the limit)");
    }
    if (index_.count(name)) throw Error(where + ": listed twice in the header");
    if (!desc.is_object()) throw Error(where + ": entry is not an object");
    const JsonValue* dt = desc.find("dtype");
    const JsonValue* shape = desc.find("shape");
    const JsonValue* offs = desc.find("data_offsets");
    if (!dt || !dt->is_string()) throw Error(where + ": missing or invalid \"dtype\"");
    if (!shape || !shape->is_array()) throw Error(where + ": missing or invalid \"shape\"");
    if (!offs || !offs->is_array() || offs->size() != 2) throw Error(where + ": missing or invalid \"data_offsets\"");
    TensorView t;
    t.name = name;
    t.file = path;
    if (!parse_dtype(dt->as_string(), &t.dtype)) {
      throw Error(where + ": unknown dtype \"" + dt->as_string() + "\" (supported: F32, F16, BF16, F64, I64, I32, I8, U8, BOOL)");
    }
    if (shape->size() > kMaxTensorRank) {
      throw Error(where + ": shape has " + std::to_string(shape->size()) + " dimensions (at most " +
                  std::to_string(kMaxTensorRank) + ")");
    }
    for (const JsonValue& d : shape->as_array()) {
      if (!d.is_integer() || d.as_int() < 0) throw Error(where + ": shape entries must be non-negative integers");
      t.shape.push_back(d.as_int());
    }
    const JsonValue& b = (*offs)[0];
    const JsonValue& e = (*offs)[1];
    if (!b.is_integer() || !e.is_integer() || b.as_int() < 0 || e.as_int() < b.as_int()) {
      throw Error(where + ": invalid data_offsets (must be integers with 0 <= begin <= end)");
    }
    const size_t begin = size_t(b.as_int()), end = size_t(e.as_int());
    if (end > data_size) {
      throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                  "] extend beyond the end of the file (data region is " + std::to_string(data_size) +
                  " bytes): the file is truncated or its header is corrupt");
    }
    const std::string size_error = safetensors_size_error(t.dtype, t.shape, end - begin);
    if (!size_error.empty()) {
      throw Error(where + ": data_offsets span " + std::to_string(end - begin) + " bytes but " + dtype_name(t.dtype) +
                  " " + t.shape_str() + " " + size_error);
    }
    t.data = data_region + begin;
    t.nbytes = end - begin;
    spans.push_back({begin, end, tensors_.size()});
    index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  });
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end) {
      throw Error(path + ": tensor " + tensors_[spans[i].tensor].name + " overlaps tensor " +
                  tensors_[spans[i - 1].tensor].name + " in the data region");
    }
  }
  tensors_.shrink_to_fit();
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}


std::unique_ptr<WeightStore> WeightStore::open(const std::string& model_dir) {
  auto ws = std::unique_ptr<WeightStore>(new WeightStore());
  ws->dir_ = model_dir;
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  const std::string single_path = model_dir + "/model.safetensors";
  if (path_exists(index_path)) {
    ws->source_ = index_path;
    const JsonValue idx = parse_json_file(index_path);
    const JsonValue* wm = idx.find("weight_map");
    if (!wm || !wm->is_object()) throw Error(index_path + ": missing \"weight_map\" object");
    // shard file name -> tensors the index places there
    std::map<std::string, std::vector<std::string>> shards;
    if (wm->size() > kMaxSafetensorsTensors) {
      throw Error(index_path + ": weight_map lists " + std::to_string(wm->size()) + " tensors (at most " +
                  std::to_string(kMaxSafetensorsTensors) + ")");
    }
    for (const auto& [tensor, file] : wm->as_object()) {
      if (!file.is_string()) throw Error(index_path + ": weight_map entry for " + tensor + " is not a string");
      const std::string& f = file.as_string();
      if (f.empty() || f.find('/') != std::string::npos || f == "..") {
        throw Error(index_path + ": weight_map entry for " + tensor + " names an invalid shard \"" + f + "\"");
      }
      shards[f].push_back(tensor);
    }
    for (const auto& [file, tensors] : shards) {
      const std::string shard_path = model_dir + "/" + file;
      if (!path_exists(shard_path)) {
        throw Error(shard_path + ": shard named in " + index_path + " (for tensor " + tensors.front() +
                    ") does not exist");
      }
      auto sf = std::make_unique<SafetensorsFile>(shard_path);
      for (const std::string& t : tensors) {
        const TensorView* tv = sf->find(t);
        if (!tv) throw Error(shard_path + ": tensor " + t + " listed in " + index_path + " is not in this shard");
        ws->by_name_[t] = tv;
      }
      ws->files_.push_back(std::move(sf));
    }
  } else if (path_exists(single_path)) {
    ws->source_ = single_path;
    auto sf = std::make_unique<SafetensorsFile>(single_path);
    for (const TensorView& t : sf->tensors()) ws->by_name_[t.name] = &t;
    ws->files_.push_back(std::move(sf));
  } else {
    throw Error(model_dir + ": no model.safetensors or model.safetensors.index.json found");
  }
  return ws;
}

const TensorView* WeightStore::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& WeightStore::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) throw Error("tensor " + name + " not found in " + source_);
  return *t;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& kv : by_name_) out.push_back(kv.first);
  return out;
}

size_t WeightStore::total_bytes() const {
  size_t n = 0;
  for (const auto& kv : by_name_) n += kv.second->nbytes;
  return n;
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& [k, v] : metadata) {
      if (!f2) header += ",";
      f2 = false;
      header += json_quote(k) + ":" + json_quote(v);
    }
    header += "}";
    first = false;
  }
  size_t offset = 0;
  for (const TensorView& t : tensors) {
    if (!first) header += ",";
    first = false;
    header += json_quote(t.name) + ":{\"dtype\":\"" + dtype_name(t.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes) + "]}";
    offset += t.nbytes;
  }
  header += "}";
  while ((8 + header.size()) % 8) header += ' ';  // align the data region to 8 bytes
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(path + ": cannot open for writing");
  unsigned char len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(header.data(), std::streamsize(header.size()));
  for (const TensorView& t : tensors) f.write(static_cast<const char*>(t.data), std::streamsize(t.nbytes));
  if (!f) throw Error(path + ": write failed");
}

}  // namespace mixq
