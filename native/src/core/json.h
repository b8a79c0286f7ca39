// A small strict JSON parser (RFC 8259) for config.json, model.safetensors.index.json, safetensors
// headers and test fixtures. Errors name the file and the byte offset.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "file.h"

namespace mixq {

class JsonValue {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }
  // True for numbers written without fraction/exponent that fit in int64.
  bool is_integer() const { return type_ == Type::Number && is_int_; }

  // Typed accessors throw mixq::Error("<what>: expected <type>") on a type mismatch.
  bool as_bool(const std::string& what = "value") const;
  double as_number(const std::string& what = "value") const;
  int64_t as_int(const std::string& what = "value") const;
  const std::string& as_string(const std::string& what = "value") const;
  const std::vector<JsonValue>& as_array(const std::string& what = "value") const;
  // Object members in file order (duplicates are rejected by the parser).
  const std::vector<std::pair<std::string, JsonValue>>& as_object(const std::string& what = "value") const;

  // Object lookup; nullptr when absent (or when this is not an object).
  const JsonValue* find(const std::string& key) const;
  size_t size() const;  // array length or number of object members
  const JsonValue& operator[](size_t i) const { return array_.at(i); }

  static const char* type_name(Type t);

  // Construction (used by the parser and by writers).
  static JsonValue make_null() { return JsonValue(); }
  static JsonValue make_bool(bool b);
  static JsonValue make_number(double d, bool is_int, int64_t i);
  static JsonValue make_string(std::string s);
  static JsonValue make_array(std::vector<JsonValue> a);
  static JsonValue make_object(std::vector<std::pair<std::string, JsonValue>> o);

 private:
  Type type_ = Type::Null;
  bool bool_ = false;
  bool is_int_ = false;
  double number_ = 0;
  int64_t int_ = 0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::vector<std::pair<std::string, JsonValue>> object_;
  std::map<std::string, size_t> index_;  // key -> position in object_
};

// Parses `text` completely (trailing non-space is an error). `source` names the file in errors:
// "config.json: invalid JSON at byte 123: expected ',' or '}'".
JsonValue parse_json(const std::string& text, const std::string& source);
JsonValue parse_json(const char* data, size_t size, const std::string& source);
// Parses a document whose root is an object, handing each member to `member` as soon as it is parsed instead of
// building the whole tree, so that memory follows what `member` keeps (a safetensors header of a million entries
// would otherwise cost ~1 KB of tree per entry). More than `max_members` members is an error naming the limit;
// duplicate keys are for `member` to detect.
void parse_json_object_members(const char* data, size_t size, const std::string& source, size_t max_members,
                               const std::function<void(std::string&& key, JsonValue&& value)>& member);
// Reads and parses a regular file of at most max_bytes (see file.h: a FIFO or a device is refused, not read); errors
// name the path.
JsonValue parse_json_file(const std::string& path, size_t max_bytes = kMaxJsonFileBytes);

// Serialises a string as a JSON string literal (quotes included).
std::string json_quote(const std::string& s);

}  // namespace mixq
