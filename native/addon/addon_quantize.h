// quantize(opts, onProgress?) → { promise, cancel } on the addon's exports (see server/src/native.ts
// NativeQuantizeOptions): an AsyncWorker running mixq::quant::quantize_model off the JS thread, progress
// delivered through a ThreadSafeFunction, cancellation through an atomic flag the returned cancel() sets.
#pragma once
#include <napi.h>

namespace mixq_addon {

void InitQuantize(Napi::Env env, Napi::Object exports);

}  // namespace mixq_addon
