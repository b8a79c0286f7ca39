#include "addon_quantize.h"
#include "cancel_function.h"

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "error.h"
#include "quant/quantize.h"

namespace mixq_addon {
namespace {

using mixq::quant::QuantizeOptions;
using mixq::quant::QuantizeProgress;
using mixq::quant::QuantizeResult;
using mixq::quant::Rounding;

void DeliverProgress(Napi::Env env, Napi::Function onProgress, std::nullptr_t*, QuantizeProgress* p) {
  std::unique_ptr<QuantizeProgress> owned(p);
  if (!env || !onProgress) return;
  Napi::Object o = Napi::Object::New(env);
  o.Set("layer", owned->layer);
  o.Set("layers", owned->layers);
  o.Set("phase", owned->phase);
  o.Set("fraction", owned->fraction);
  o.Set("elapsedS", owned->elapsed_s);
  o.Set("etaS", owned->eta_s);
  try {
    onProgress.Call({o});
  } catch (const Napi::Error&) {
    // A throwing progress listener must not take the quantization down; the exception is dropped.
  }
}

using ProgressTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, QuantizeProgress, DeliverProgress>;

class QuantizeWorker : public Napi::AsyncWorker {
 public:
  QuantizeWorker(Napi::Env env, QuantizeOptions opts, std::shared_ptr<std::atomic<bool>> cancel)
      : Napi::AsyncWorker(env, "mixq.quantize"), deferred_(Napi::Promise::Deferred::New(env)),
        opts_(std::move(opts)), cancel_(std::move(cancel)) {
    opts_.cancel = cancel_.get();
  }
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void ProgressTo(Napi::Env env, Napi::Function onProgress) {
    tsfn_ = ProgressTsfn::New(env, onProgress, "mixq.quantize.onProgress", 0, 1);
    hasTsfn_ = true;
  }

  void Execute() override {
    try {
      if (hasTsfn_) {
        opts_.on_progress = [this](const QuantizeProgress& p) { tsfn_.NonBlockingCall(new QuantizeProgress(p)); };
      }
      result_ = mixq::quant::quantize_model(opts_);
    } catch (const mixq::Cancelled&) {
      cancelled_ = true;
      SetError("quantization cancelled");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Release();
    Napi::Object o = Napi::Object::New(env);
    o.Set("outputDir", result_.output_dir);
    o.Set("seconds", result_.seconds);
    o.Set("peakRssBytes", double(result_.peak_rss_bytes));
    o.Set("layers", result_.layers);
    o.Set("calibTokens", double(result_.calib_tokens));
    o.Set("expertsWithoutTokens", result_.experts_without_tokens);
    o.Set("outputBytes", double(result_.output_bytes));
    Napi::Array layerSeconds = Napi::Array::New(env, result_.layer_seconds.size());
    for (size_t i = 0; i < result_.layer_seconds.size(); ++i) layerSeconds.Set(uint32_t(i), result_.layer_seconds[i]);
    o.Set("layerSeconds", layerSeconds);
    Napi::Array warnings = Napi::Array::New(env, result_.warnings.size());
    for (size_t i = 0; i < result_.warnings.size(); ++i) warnings.Set(uint32_t(i), result_.warnings[i]);
    o.Set("warnings", warnings);
    Napi::Array alphas = Napi::Array::New(env, result_.best_alpha.size());
    for (size_t i = 0; i < result_.best_alpha.size(); ++i) alphas.Set(uint32_t(i), double(result_.best_alpha[i]));
    o.Set("bestAlpha", alphas);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override {
    Release();
    Napi::Error err = e;
    err.Set("cancelled", Napi::Boolean::New(Env(), cancelled_));
    deferred_.Reject(err.Value());
  }

 private:
  void Release() {
    if (hasTsfn_) {
      tsfn_.Release();
      hasTsfn_ = false;
    }
  }

  Napi::Promise::Deferred deferred_;
  QuantizeOptions opts_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  QuantizeResult result_;
  ProgressTsfn tsfn_;
  bool hasTsfn_ = false;
  bool cancelled_ = false;
};

std::string reqString(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("quantize: opts.") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

int optInt(const Napi::Object& o, const char* key, int fallback, int min_value) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("quantize: opts.") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != double(int64_t(d)) || d < min_value || d > 2147483647.0) {
    throw Napi::RangeError::New(o.Env(), std::string("quantize: opts.") + key + " must be an integer ≥ " +
                                             std::to_string(min_value));
  }
  return int(d);
}

// quantize(opts, onProgress?) → { promise: Promise<NativeQuantizeResult>, cancel(): void }
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "quantize(opts, onProgress?): opts must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  QuantizeOptions opts;
  opts.source_dir = reqString(o, "source");
  opts.output_dir = reqString(o, "output");
  Napi::Value method = o.Get("method");
  if (!method.IsUndefined()) opts.method = reqString(o, "method");
  opts.group_size = optInt(o, "groupSize", 128, 1);
  Napi::Value zp = o.Get("zeroPoint");
  if (!zp.IsUndefined()) opts.zero_point = zp.ToBoolean().Value();
  opts.samples = optInt(o, "samples", 0, 0);
  opts.seq_len = optInt(o, "seqLen", 0, 0);
  opts.threads = optInt(o, "threads", 0, 0);
  opts.clip_tokens = optInt(o, "clipTokens", 512, 1);
  Napi::Value rounding = o.Get("rounding");
  if (!rounding.IsUndefined()) {
    const std::string r = reqString(o, "rounding");
    if (r != "gptq" && r != "nearest") throw Napi::TypeError::New(env, "quantize: opts.rounding must be 'gptq' or 'nearest', got '" + r + "'");
    opts.rounding = r == "gptq" ? Rounding::Gptq : Rounding::Nearest;
  }
  Napi::Value propagate = o.Get("propagate");
  if (!propagate.IsUndefined()) {
    const std::string p = reqString(o, "propagate");
    if (p != "quantized" && p != "float") throw Napi::TypeError::New(env, "quantize: opts.propagate must be 'quantized' or 'float', got '" + p + "'");
    opts.propagate_quantized = p == "quantized";
  }
  Napi::Value ids = o.Get("calibIds");
  if (!ids.IsUndefined() && !ids.IsNull()) {
    if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      throw Napi::TypeError::New(env, "quantize: opts.calibIds must be an Int32Array");
    }
    Napi::Int32Array arr = ids.As<Napi::Int32Array>();
    opts.calib_ids.assign(arr.Data(), arr.Data() + arr.ElementLength());
  }
  const bool progress = info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull();
  if (progress && !info[1].IsFunction()) throw Napi::TypeError::New(env, "quantize(opts, onProgress?): onProgress must be a function");

  auto cancel = std::make_shared<std::atomic<bool>>(false);
  auto* worker = new QuantizeWorker(env, std::move(opts), cancel);
  if (progress) worker->ProgressTo(env, info[1].As<Napi::Function>());
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("promise", worker->Promise());
  handle.Set("cancel", CancelFunction(env, cancel));
  worker->Queue();
  return handle;
}

}  // namespace

void InitQuantize(Napi::Env env, Napi::Object exports) {
  exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
}

}  // namespace mixq_addon
