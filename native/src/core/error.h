// Errors the engine reports to callers (N-API layer, CLI, tests).
// Every message names the file, tensor or config field it is about.
#pragma once
#include <stdexcept>
#include <string>

namespace mixq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Thrown when a generation or a job is cancelled through its cancel flag.
class Cancelled : public Error {
 public:
  Cancelled() : Error("cancelled") {}
};

}  // namespace mixq
