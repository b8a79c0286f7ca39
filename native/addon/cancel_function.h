// The `cancel()` function of a job handle ({result|promise, cancel}) returned to JavaScript: it sets the
// job's atomic flag, which the worker polls (before every token, between quantizer phases).
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

namespace mixq_addon {

inline Napi::Function CancelFunction(Napi::Env env, std::shared_ptr<std::atomic<bool>> cancel) {
  return Napi::Function::New(env, [cancel](const Napi::CallbackInfo& ci) {
    cancel->store(true);
    return ci.Env().Undefined();
  }, "cancel");
}

}  // namespace mixq_addon
