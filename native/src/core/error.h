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

// Checks an op's arguments: `what` (an expression building the message) is evaluated only when `cond` fails, so a
// check costs one comparison on the hot path.
#define MIXQ_CHECK_ARG(cond, op, what)                                         \
  do {                                                                         \
    if (!(cond)) throw ::mixq::Error(std::string(op) + ": " + (what));         \
  } while (0)
