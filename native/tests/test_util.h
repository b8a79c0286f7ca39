// Tiny test helper: each check prints one line; finish() prints "N passed, M failed" and gives the
// exit code. Tests needing ../shared/fixtures call require_fixtures() (prints SKIPPED, exits 77).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mixq_test {

// Records and prints "ok   - what" or "FAIL - what (detail)".
bool check(bool ok, const std::string& what, const std::string& detail = "");
// check() that `fn` throws mixq::Error whose message contains every one of `needles`.
template <typename F>
bool check_throws(F&& fn, const std::vector<std::string>& needles, const std::string& what);
int finish();  // prints the summary; 0 when nothing failed, 1 otherwise

std::string repo_root();      // MIXQ_REPO_ROOT
std::string fixtures_dir();   // <repo>/../shared/fixtures
void require_fixtures();      // exits 77 with "SKIPPED: ../shared/fixtures not found" when absent
std::string tiny_model_dir(); // <repo>/models/mixq-tiny-code
std::string qwen_model_dir(); // <repo>/models/mixq-tiny-qwen3moe (the Qwen3-MoE fixture model)

// ‖a − b‖ / ‖b‖ over n floats.
double rel_err(const float* a, const float* b, size_t n);
std::string fmt(double v);
std::string make_temp_dir(const std::string& tag);  // fresh directory under $TMPDIR
std::string read_file(const std::string& path);                        // the whole file, binary
void write_file(const std::string& path, const std::string& bytes);   // replaces the file
void remove_tree(const std::string& dir);

}  // namespace mixq_test

#include <exception>
namespace mixq_test {
template <typename F>
bool check_throws(F&& fn, const std::vector<std::string>& needles, const std::string& what) {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles) {
      if (msg.find(n) == std::string::npos) return check(false, what, "message lacks \"" + n + "\": " + msg);
    }
    return check(true, what + " → " + msg);
  }
  return check(false, what, "no error was thrown");
}
}  // namespace mixq_test
