// libFuzzer target: the JSON parser (config.json, the shard index, safetensors headers all go through it), both the
// tree and the member-by-member form. Any input either parses or throws mixq::Error; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "error.h"
#include "json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  try {
    const mixq::JsonValue v = mixq::parse_json(text, size, "fuzz");
    // Walk what came back (accessors must agree with the types the parser reported).
    if (v.is_object()) {
      for (const auto& [k, m] : v.as_object()) {
        if (v.find(k) == nullptr) __builtin_trap();
        (void)m.size();
      }
    }
  } catch (const mixq::Error&) {
  }
  try {
    size_t members = 0;
    mixq::parse_json_object_members(text, size, "fuzz", 64, [&](std::string&&, mixq::JsonValue&&) { ++members; });
    if (members > 64) __builtin_trap();
  } catch (const mixq::Error&) {
  }
  return 0;
}
