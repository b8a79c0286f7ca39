// Recursive-descent JSON parser. Strict: no comments, no trailing commas, no NaN/Infinity,
// control characters in strings rejected, surrogate pairs validated, duplicate keys rejected.
#include "json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "error.h"
#include "file.h"

namespace mixq {

const char* JsonValue::type_name(Type t) {
  switch (t) {
    case Type::Null: return "null";
    case Type::Bool: return "boolean";
    case Type::Number: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
  }
  return "?";
}

static void type_error(const std::string& what, const char* want, JsonValue::Type got) {
  throw Error(what + ": expected " + want + ", got " + JsonValue::type_name(got));
}

bool JsonValue::as_bool(const std::string& what) const {
  if (type_ != Type::Bool) type_error(what, "boolean", type_);
  return bool_;
}
double JsonValue::as_number(const std::string& what) const {
  if (type_ != Type::Number) type_error(what, "number", type_);
  return number_;
}
int64_t JsonValue::as_int(const std::string& what) const {
  if (type_ != Type::Number) type_error(what, "integer", type_);
  if (!is_int_) {
    // Accept 4096.0-style integers written as floats, reject 0.5.
    if (std::floor(number_) == number_ && std::fabs(number_) < 9.0e15) return int64_t(number_);
    throw Error(what + ": expected an integer, got " + std::to_string(number_));
  }
  return int_;
}
const std::string& JsonValue::as_string(const std::string& what) const {
  if (type_ != Type::String) type_error(what, "string", type_);
  return string_;
}
const std::vector<JsonValue>& JsonValue::as_array(const std::string& what) const {
  if (type_ != Type::Array) type_error(what, "array", type_);
  return array_;
}
const std::vector<std::pair<std::string, JsonValue>>& JsonValue::as_object(const std::string& what) const {
  if (type_ != Type::Object) type_error(what, "object", type_);
  return object_;
}
const JsonValue* JsonValue::find(const std::string& key) const {
  if (type_ != Type::Object) return nullptr;
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &object_[it->second].second;
}
size_t JsonValue::size() const {
  if (type_ == Type::Array) return array_.size();
  if (type_ == Type::Object) return object_.size();
  return 0;
}

JsonValue JsonValue::make_bool(bool b) {
  JsonValue v;
  v.type_ = Type::Bool;
  v.bool_ = b;
  return v;
}
JsonValue JsonValue::make_number(double d, bool is_int, int64_t i) {
  JsonValue v;
  v.type_ = Type::Number;
  v.number_ = d;
  v.is_int_ = is_int;
  v.int_ = i;
  return v;
}
JsonValue JsonValue::make_string(std::string s) {
  JsonValue v;
  v.type_ = Type::String;
  v.string_ = std::move(s);
  return v;
}
JsonValue JsonValue::make_array(std::vector<JsonValue> a) {
  JsonValue v;
  v.type_ = Type::Array;
  v.array_ = std::move(a);
  return v;
}
JsonValue JsonValue::make_object(std::vector<std::pair<std::string, JsonValue>> o) {
  JsonValue v;
  v.type_ = Type::Object;
  v.object_ = std::move(o);
  for (size_t i = 0; i < v.object_.size(); ++i) v.index_[v.object_[i].first] = i;
  return v;
}

namespace {

class Parser {
 public:
  Parser(const char* p, size_t n, const std::string& source) : s_(p), n_(n), source_(source) {}

  JsonValue parse_document() {
    skip_ws();
    JsonValue v = parse_value(0);
    skip_ws();
    if (pos_ != n_) fail("unexpected trailing characters");
    return v;
  }

  // The root object's members one at a time (see parse_json_object_members).
  void parse_members(size_t max_members, const std::function<void(std::string&&, JsonValue&&)>& member) {
    skip_ws();
    if (peek() != '{') fail("expected a JSON object");
    ++pos_;
    skip_ws();
    size_t count = 0;
    if (peek() == '}') {
      ++pos_;
    } else {
      for (;;) {
        skip_ws();
        if (peek() != '"') fail("expected a string key");
        std::string key = parse_string();
        skip_ws();
        if (peek() != ':') fail("expected ':'");
        ++pos_;
        skip_ws();
        if (++count > max_members) fail("more than " + std::to_string(max_members) + " entries");
        JsonValue v = parse_value(1);
        member(std::move(key), std::move(v));
        skip_ws();
        if (peek() == ',') { ++pos_; continue; }
        if (peek() == '}') { ++pos_; break; }
        fail("expected ',' or '}'");
      }
    }
    skip_ws();
    if (pos_ != n_) fail("unexpected trailing characters");
  }

 private:
  static constexpr int kMaxDepth = 256;
  const char* s_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& source_;

  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(source_ + ": invalid JSON at byte " + std::to_string(pos_) + ": " + msg);
  }
  void skip_ws() {
    while (pos_ < n_ && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  char peek() const { return pos_ < n_ ? s_[pos_] : '\0'; }
  void expect_literal(const char* lit) {
    for (const char* c = lit; *c; ++c) {
      if (pos_ >= n_ || s_[pos_] != *c) fail(std::string("invalid literal, expected '") + lit + "'");
      ++pos_;
    }
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    if (pos_ >= n_) fail("unexpected end of input");
    switch (s_[pos_]) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return JsonValue::make_string(parse_string());
      case 't': expect_literal("true"); return JsonValue::make_bool(true);
      case 'f': expect_literal("false"); return JsonValue::make_bool(false);
      case 'n': expect_literal("null"); return JsonValue::make_null();
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) return parse_number();
        fail(std::string("unexpected character '") + s_[pos_] + "'");
    }
  }

  JsonValue parse_object(int depth) {
    ++pos_;  // '{'
    std::vector<std::pair<std::string, JsonValue>> members;
    std::map<std::string, size_t> seen;
    skip_ws();
    if (peek() == '}') { ++pos_; return JsonValue::make_object(std::move(members)); }
    for (;;) {
      skip_ws();
      if (peek() != '"') fail("expected a string key");
      const size_t key_pos = pos_;
      std::string key = parse_string();
      if (seen.count(key)) { pos_ = key_pos; fail("duplicate key \"" + key + "\""); }
      seen[key] = members.size();
      skip_ws();
      if (peek() != ':') fail("expected ':'");
      ++pos_;
      skip_ws();
      JsonValue v = parse_value(depth + 1);
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == ',') { ++pos_; continue; }
      if (peek() == '}') { ++pos_; break; }
      fail("expected ',' or '}'");
    }
    return JsonValue::make_object(std::move(members));
  }

  JsonValue parse_array(int depth) {
    ++pos_;  // '['
    std::vector<JsonValue> items;
    skip_ws();
    if (peek() == ']') { ++pos_; return JsonValue::make_array(std::move(items)); }
    for (;;) {
      skip_ws();
      items.push_back(parse_value(depth + 1));
      skip_ws();
      if (peek() == ',') { ++pos_; continue; }
      if (peek() == ']') { ++pos_; break; }
      fail("expected ',' or ']'");
    }
    return JsonValue::make_array(std::move(items));
  }

  unsigned parse_hex4() {
    if (pos_ + 4 > n_) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else { --pos_; fail("invalid hex digit in \\u escape"); }
    }
    return v;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= n_) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') { ++pos_; return out; }
      if (c < 0x20) fail("control character in string");
      if (c != '\\') { out += char(c); ++pos_; continue; }
      ++pos_;
      if (pos_ >= n_) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = parse_hex4();
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (pos_ + 2 > n_ || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') fail("unpaired high surrogate");
            pos_ += 2;
            const unsigned lo = parse_hex4();
            if (lo < 0xdc00 || lo > 0xdfff) fail("invalid low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            fail("unpaired low surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: --pos_; fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  JsonValue parse_number() {
    const size_t start = pos_;
    bool is_int = true;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("invalid number");
    }
    if (peek() == '.') {
      is_int = false;
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("digit expected after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      is_int = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("digit expected in exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    // from_chars: locale-independent (strtod would read "0.02" as 0 under a comma-decimal locale).
    double d = 0;
    const auto rd = std::from_chars(s_ + start, s_ + pos_, d);
    if (rd.ec == std::errc::result_out_of_range) {
      pos_ = start;
      fail("number out of range");
    }
    int64_t i = 0;
    if (is_int) {
      const auto ri = std::from_chars(s_ + start, s_ + pos_, i);
      if (ri.ec != std::errc()) is_int = false;  // beyond int64: keep it as a double
    }
    return JsonValue::make_number(d, is_int, i);
  }
};

}  // namespace

JsonValue parse_json(const char* data, size_t size, const std::string& source) {
  return Parser(data, size, source).parse_document();
}

void parse_json_object_members(const char* data, size_t size, const std::string& source, size_t max_members,
                               const std::function<void(std::string&& key, JsonValue&& value)>& member) {
  Parser(data, size, source).parse_members(max_members, member);
}

JsonValue parse_json(const std::string& text, const std::string& source) {
  return parse_json(text.data(), text.size(), source);
}

JsonValue parse_json_file(const std::string& path, size_t max_bytes) {
  return parse_json(read_regular_file(path, max_bytes, "a JSON file"), path);
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace mixq
