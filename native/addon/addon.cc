// The N-API addon: a thin layer over the engine API (engine.h, perplexity.h, bench.h).
// Each call parses its arguments on the JS thread, queues an AsyncWorker that runs the engine on a libuv
// worker thread, and converts the result back. Generated tokens stream to JS through a ThreadSafeFunction.
// The surface is typed once in server/src/native.ts; keep the two in sync.
// C++ exceptions: a thrown Napi::Error becomes a JS exception; engine errors (mixq::Error) reject promises.
#define NAPI_CPP_EXCEPTIONS
#include <napi.h>

#include <atomic>
#include <cstdlib>  // defines __GLIBC__ on glibc
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon_quantize.h"  // quantize(): the AWQ quantizer (addon_quantize.cc)
#include "cancel_function.h"
#include "bench.h"
#include "core/backend.h"
#include "engine.h"
#include "perplexity.h"

namespace {

using mixq::Context;
using mixq::Model;

// Per-environment state (worker threads may load the addon in several environments).
struct AddonData {
  Napi::FunctionReference engineConstructor;
};

// ---- argument parsing --------------------------------------------------------------------------------

// Reads an optional number field; throws a JS TypeError naming the field when it has the wrong type.
double optNumber(const Napi::Object& obj, const char* key, double fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(obj.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int optInt(const Napi::Object& obj, const char* key, int fallback, int minValue) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  double d = optNumber(obj, key, fallback);
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < minValue || d > 2147483647.0) {
    throw Napi::RangeError::New(obj.Env(), std::string(key) + " must be an integer >= " + std::to_string(minValue));
  }
  return static_cast<int>(d);
}

bool optBool(const Napi::Object& obj, const char* key, bool fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsBoolean()) throw Napi::TypeError::New(obj.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string optString(const Napi::Object& obj, const char* key, const std::string& fallback) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(obj.Env(), std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// A JS array of integer token ids in [0, limit) (limit 0: only >= 0 is checked).
std::vector<int32_t> intArray(const Napi::Env& env, Napi::Value v, const char* what, int64_t limit) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of integers");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<int32_t> out(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1.0;
    if (d != static_cast<double>(static_cast<int64_t>(d)) || d < 0 || (limit > 0 && d >= static_cast<double>(limit))) {
      throw Napi::RangeError::New(env, std::string(what) + "[" + std::to_string(i) + "] is not a token id" +
                                           (limit > 0 ? " in [0, " + std::to_string(limit) + ")" : ""));
    }
    out[i] = static_cast<int32_t>(d);
  }
  return out;
}

Napi::Array toArray(const Napi::Env& env, const std::vector<int32_t>& ids) {
  Napi::Array arr = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ids[i]));
  return arr;
}

// Names as in native.ts `StopReason`.
const char* stopReasonJs(mixq::StopReason r) {
  switch (r) {
    case mixq::StopReason::Eos: return "eos";
    case mixq::StopReason::StopId: return "stop_id";
    case mixq::StopReason::MaxTokens: return "max_tokens";
    case mixq::StopReason::Cancelled: return "cancelled";
    case mixq::StopReason::ContextFull: return "context_full";
    case mixq::StopReason::Callback: return "callback";
  }
  return "max_tokens";
}

// ---- the engine object ---------------------------------------------------------------------------------

// What a loaded engine owns. Shared with running workers so that dispose() during a generation is safe:
// the worker keeps the model and context alive until it ends.
struct EngineState {
  std::shared_ptr<Model> model;
  std::unique_ptr<Context> context;
  std::atomic<bool> busy{false};  // one generation / perplexity at a time
  std::atomic<bool> disposed{false};
  std::shared_ptr<std::atomic<bool>> currentCancel;  // cancel flag of the running job (JS thread only)
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeEngine",
                       {InstanceMethod<&EngineWrap::Info>("info"),
                        InstanceMethod<&EngineWrap::Generate>("generate"),
                        InstanceMethod<&EngineWrap::Perplexity>("perplexity"),
                        InstanceMethod<&EngineWrap::CachedTokens>("cachedTokens"),
                        InstanceMethod<&EngineWrap::Reset>("reset"),
                        InstanceMethod<&EngineWrap::SetProfiling>("setProfiling"),
                        InstanceMethod<&EngineWrap::Profile>("profile"),
                        InstanceMethod<&EngineWrap::ResetProfile>("resetProfile"),
                        InstanceMethod<&EngineWrap::Dispose>("dispose")});
  }

  // Constructed only by loadModel, with an External<shared_ptr<EngineState>>.
  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "NativeEngine is created by loadModel()");
    }
    state_ = *info[0].As<Napi::External<std::shared_ptr<EngineState>>>().Data();
  }

 private:
  EngineState& live(const Napi::Env& env) {
    if (!state_ || state_->disposed) throw Napi::Error::New(env, "the engine has been disposed");
    return *state_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Perplexity(const Napi::CallbackInfo& info);

  Napi::Value CachedTokens(const Napi::CallbackInfo& info) {
    EngineState& s = live(info.Env());
    if (s.busy) throw Napi::Error::New(info.Env(), "cachedTokens(): a generation is running");
    return toArray(info.Env(), s.context->cached_tokens());
  }

  Napi::Value Reset(const Napi::CallbackInfo& info) {
    EngineState& s = live(info.Env());
    if (s.busy) throw Napi::Error::New(info.Env(), "reset(): a generation is running");
    s.context->truncate(0);
    return info.Env().Undefined();
  }

  // Profiling is thread-safe in the engine (a flag and counters under a short lock): these run on the JS thread, also
  // while a generation runs on a worker.
  Napi::Value SetProfiling(const Napi::CallbackInfo& info) {
    EngineState& s = live(info.Env());
    if (info.Length() < 1 || !info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "setProfiling(enabled: boolean)");
    s.model->set_profiling(info[0].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  }
  Napi::Value Profile(const Napi::CallbackInfo& info);
  Napi::Value ResetProfile(const Napi::CallbackInfo& info) {
    live(info.Env()).model->reset_profile();
    return info.Env().Undefined();
  }

  // Cancels a running job; memory is released once no worker holds the state any more.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (state_) {
      state_->disposed = true;
      if (state_->currentCancel) state_->currentCancel->store(true);
      state_.reset();
#ifdef __GLIBC__
      // A checkpoint's views and headers are many small blocks: give the freed heap back to the system, so that
      // switching models does not leave the old one's peak in the server's RSS.
      malloc_trim(0);
#endif
    }
    return info.Env().Undefined();
  }

  std::shared_ptr<EngineState> state_;
};


// {mode, devices: [{name, weightBytes, arenaBytes}], embed, lmHead, layers: [device], experts: [[device]]}
Napi::Object PlacementObject(Napi::Env env, const mixq::Model& model) {
  const mixq::Plan& plan = model.placement();
  auto name = [&](int d) { return plan.devices[static_cast<size_t>(d)].str(); };
  Napi::Object p = Napi::Object::New(env);
  p.Set("mode", mixq::placement_mode_name(plan.mode));
  const std::vector<mixq::DeviceUsage> usage = model.device_usage();
  Napi::Array devs = Napi::Array::New(env, usage.size());
  for (size_t i = 0; i < usage.size(); i++) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", usage[i].device);
    d.Set("backend", usage[i].name);
    d.Set("weightBytes", static_cast<double>(usage[i].planned_bytes));
    d.Set("arenaBytes", static_cast<double>(usage[i].arena_bytes));
    devs.Set(static_cast<uint32_t>(i), d);
  }
  p.Set("devices", devs);
  p.Set("embed", name(plan.embed));
  p.Set("lmHead", name(plan.head));
  Napi::Array layers = Napi::Array::New(env, plan.layer.size());
  Napi::Array experts = Napi::Array::New(env, plan.expert.size());
  for (size_t l = 0; l < plan.layer.size(); l++) {
    layers.Set(static_cast<uint32_t>(l), name(plan.layer[l]));
    Napi::Array row = Napi::Array::New(env, plan.expert[l].size());
    for (size_t e = 0; e < plan.expert[l].size(); e++) row.Set(static_cast<uint32_t>(e), name(plan.expert[l][e]));
    experts.Set(static_cast<uint32_t>(l), row);
  }
  p.Set("layers", layers);
  p.Set("experts", experts);
  return p;
}

// {name, stream, startUs, durUs}[] (native.ts NativeProfileEvent)
Napi::Array EventsArray(Napi::Env env, const std::vector<mixq::ProfileEvent>& events) {
  Napi::Array arr = Napi::Array::New(env, events.size());
  for (size_t i = 0; i < events.size(); i++) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("name", events[i].name);
    e.Set("stream", events[i].stream);
    e.Set("startUs", events[i].start_us);
    e.Set("durUs", events[i].dur_us);
    arr.Set(static_cast<uint32_t>(i), e);
  }
  return arr;
}

// native.ts NativeProfile
Napi::Object ProfileObject(Napi::Env env, const mixq::ModelProfile& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("enabled", p.enabled);
  Napi::Array devices = Napi::Array::New(env, p.devices.size());
  for (size_t i = 0; i < p.devices.size(); i++) {
    const mixq::DeviceProfile& d = p.devices[i];
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("device", d.device);
    dev.Set("kind", d.kind);
    dev.Set("backend", d.backend);
    Napi::Array kernels = Napi::Array::New(env, d.profile.kernels.size());
    for (size_t j = 0; j < d.profile.kernels.size(); j++) {
      const mixq::KernelStats& k = d.profile.kernels[j];
      Napi::Object ko = Napi::Object::New(env);
      ko.Set("name", k.name);
      ko.Set("calls", static_cast<double>(k.calls));
      ko.Set("totalUs", k.total_us);
      ko.Set("bytes", static_cast<double>(k.bytes));
      kernels.Set(static_cast<uint32_t>(j), ko);
    }
    dev.Set("kernels", kernels);
    dev.Set("events", EventsArray(env, d.profile.events));
    dev.Set("droppedEvents", static_cast<double>(d.profile.dropped_events));
    devices.Set(static_cast<uint32_t>(i), dev);
  }
  o.Set("devices", devices);
  o.Set("steps", EventsArray(env, p.steps.events));
  return o;
}

Napi::Value EngineWrap::Profile(const Napi::CallbackInfo& info) {
  return ProfileObject(info.Env(), live(info.Env()).model->profile());
}

Napi::Value EngineWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineState& s = live(env);
  const mixq::ModelConfig& c = s.model->config();
  Napi::Object o = Napi::Object::New(env);
  o.Set("modelType", c.model_type);
  o.Set("hiddenSize", c.hidden_size);
  o.Set("intermediateSize", c.intermediate_size);
  o.Set("numLayers", c.num_hidden_layers);
  o.Set("numHeads", c.num_attention_heads);
  o.Set("numKvHeads", c.num_key_value_heads);
  o.Set("headDim", c.head_dim);
  o.Set("numExperts", c.num_local_experts);
  o.Set("topK", c.num_experts_per_tok);
  o.Set("vocabSize", c.vocab_size);
  o.Set("bosTokenId", c.bos_token_id);
  o.Set("eosTokenId", c.eos_token_id);
  o.Set("contextLength", s.context->capacity());
  o.Set("maxPositionEmbeddings", c.max_position_embeddings);
  o.Set("slidingWindow", c.sliding_window);
  o.Set("weightBytes", static_cast<double>(s.model->weight_bytes()));
  std::string quant = "none";
  if (c.quant.enabled) {
    quant = c.quant.quant_method + " int" + std::to_string(c.quant.bits) + " g" + std::to_string(c.quant.group_size);
  }
  o.Set("quantization", quant);
  o.Set("device", s.model->options().device);
  o.Set("threads", s.model->threads());
  o.Set("description", s.model->description());
  const mixq::Plan& plan = s.model->placement();
  Napi::Array devices = Napi::Array::New(env, plan.devices.size());
  for (size_t i = 0; i < plan.devices.size(); i++) devices.Set(static_cast<uint32_t>(i), plan.devices[i].str());
  o.Set("devices", devices);
  o.Set("placement", PlacementObject(env, *s.model));
  return o;
}

// ---- loadModel -----------------------------------------------------------------------------------------

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, mixq::EngineOptions opts)
      : Napi::AsyncWorker(env, "mixq.loadModel"), deferred_(Napi::Promise::Deferred::New(env)),
        dir_(std::move(dir)), opts_(std::move(opts)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      auto state = std::make_shared<EngineState>();
      state->model = Model::load(dir_, opts_);
      state->context = std::make_unique<Context>(state->model, opts_.context_length);
      state_ = std::move(state);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    AddonData* data = env.GetInstanceData<AddonData>();
    auto external = Napi::External<std::shared_ptr<EngineState>>::New(env, &state_);
    // The constructor copies the shared_ptr out of the External while state_ is still alive.
    deferred_.Resolve(data->engineConstructor.New({external}));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string dir_;
  mixq::EngineOptions opts_;
  std::shared_ptr<EngineState> state_;
};

std::vector<std::string> stringArray(const Napi::Env& env, Napi::Value v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsString()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

// devices: string[], placement: 'layer' | 'expert', split: number[] (each > 0).
void ParsePlacement(const Napi::Env& env, const Napi::Object& o, std::vector<std::string>* devices,
                    std::string* placement, std::vector<double>* split) {
  Napi::Value d = o.Get("devices");
  if (!d.IsUndefined() && !d.IsNull()) *devices = stringArray(env, d, "devices");
  *placement = optString(o, "placement", *placement);
  if (*placement != "layer" && *placement != "expert") {
    throw Napi::TypeError::New(env, "placement must be 'layer' or 'expert', not '" + *placement + "'");
  }
  Napi::Value sp = o.Get("split");
  if (sp.IsUndefined() || sp.IsNull()) return;
  if (!sp.IsArray()) throw Napi::TypeError::New(env, "split must be an array of numbers > 0");
  Napi::Array arr = sp.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    const double v = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(v > 0) || v > 1e12) throw Napi::TypeError::New(env, "split must be an array of numbers > 0");
    split->push_back(v);
  }
}

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "loadModel(dir, opts?): dir must be a string");
  mixq::EngineOptions opts;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "loadModel(dir, opts?): opts must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    opts.device = optString(o, "device", opts.device);
    opts.threads = optInt(o, "threads", 0, 0);
    opts.context_length = optInt(o, "contextLength", 0, 0);
    Napi::Value gpus = o.Get("gpus");
    if (!gpus.IsUndefined() && !gpus.IsNull()) {
      for (int32_t g : intArray(env, gpus, "gpus", 0)) opts.gpus.push_back(g);
    }
    ParsePlacement(env, o, &opts.devices, &opts.placement, &opts.split);
  }
  auto* worker = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), opts);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- generate ------------------------------------------------------------------------------------------

// Streaming: each token is queued to the JS thread through a ThreadSafeFunction. The worker keeps at most one
// token undelivered: before returning from the callback for token k it waits until token k-1 has been handed
// to JS. So a cancel() made inside the JS callback of token k lets at most token k+1 be produced, and every
// token callback has run before the result promise resolves (Execute returns only once all are delivered).
struct TokenStream {
  std::mutex mutex;
  std::condition_variable delivered;
  int pending = 0;                  // tokens queued but not yet handed to JS
  std::shared_ptr<std::atomic<bool>> cancel;
  std::string callbackError;        // message of an exception thrown by the JS callback
  Napi::Reference<Napi::Value> callbackException;
};

void DeliverToken(Napi::Env env, Napi::Function onToken, TokenStream* stream, int32_t* token) {
  std::unique_ptr<int32_t> owned(token);
  if (env != nullptr && !onToken.IsEmpty() && stream->callbackException.IsEmpty()) {
    try {
      onToken.Call({Napi::Number::New(env, *owned)});
    } catch (const Napi::Error& e) {
      // A throwing callback stops the generation; the result promise rejects with its exception.
      stream->callbackException = Napi::Persistent(e.Value().As<Napi::Value>());
      stream->cancel->store(true);
    }
  }
  {
    std::lock_guard<std::mutex> lock(stream->mutex);
    stream->pending--;
  }
  stream->delivered.notify_all();
}

using TokenTsfn = Napi::TypedThreadSafeFunction<TokenStream, int32_t, DeliverToken>;

class GenerateWorker : public Napi::AsyncWorker {
 public:
  GenerateWorker(Napi::Env env, std::shared_ptr<EngineState> state, std::vector<int32_t> prompt,
                 mixq::GenerateOptions opts, std::shared_ptr<std::atomic<bool>> cancel)
      : Napi::AsyncWorker(env, "mixq.generate"), deferred_(Napi::Promise::Deferred::New(env)),
        state_(std::move(state)), prompt_(std::move(prompt)), opts_(std::move(opts)) {
    stream_.cancel = std::move(cancel);
  }
  ~GenerateWorker() override {
    if (hasTsfn_) tsfn_.Release();
  }
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void StreamTo(Napi::Env env, Napi::Function onToken) {
    tsfn_ = TokenTsfn::New(env, onToken, "mixq.generate.onToken", 0, 1, &stream_);
    hasTsfn_ = true;
  }

  void Execute() override {
    try {
      mixq::TokenCallback onToken;
      if (hasTsfn_) {
        onToken = [this](int32_t token) {
          std::unique_lock<std::mutex> lock(stream_.mutex);
          stream_.pending++;
          lock.unlock();
          auto* item = new int32_t(token);  // owned by DeliverToken once queued
          if (tsfn_.NonBlockingCall(item) != napi_ok) {
            // The environment is shutting down: nothing will be delivered; stop generating.
            delete item;
            lock.lock();
            stream_.pending--;
            return false;
          }
          lock.lock();
          stream_.delivered.wait(lock, [this] { return stream_.pending <= 1; });
          return true;
        };
      }
      result_ = mixq::generate(*state_->context, prompt_, opts_, onToken, stream_.cancel.get());
      if (hasTsfn_) {
        std::unique_lock<std::mutex> lock(stream_.mutex);
        stream_.delivered.wait(lock, [this] { return stream_.pending == 0; });
      }
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Finish();
    if (!stream_.callbackException.IsEmpty()) {
      deferred_.Reject(stream_.callbackException.Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", toArray(env, result_.tokens));
    o.Set("stopReason", stopReasonJs(result_.stop_reason));
    o.Set("promptTokens", result_.prompt_tokens);
    o.Set("reusedTokens", result_.reused_tokens);
    o.Set("evaluatedTokens", result_.evaluated_tokens);
    o.Set("prefillMs", result_.prefill_ms);
    o.Set("decodeMs", result_.decode_ms);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override {
    Finish();
    deferred_.Reject(stream_.callbackException.IsEmpty() ? e.Value() : stream_.callbackException.Value());
  }

 private:
  void Finish() {
    if (state_->currentCancel == stream_.cancel) state_->currentCancel.reset();
    state_->busy = false;
  }

  Napi::Promise::Deferred deferred_;
  std::shared_ptr<EngineState> state_;
  std::vector<int32_t> prompt_;
  mixq::GenerateOptions opts_;
  mixq::GenerateResult result_;
  TokenStream stream_;
  TokenTsfn tsfn_;
  bool hasTsfn_ = false;
};

// generate(req, onToken?) → { result: Promise<NativeGenerateResult>, cancel(): void }
Napi::Value EngineWrap::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineState& s = live(env);
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "generate(req, onToken?): req must be an object");
  Napi::Object req = info[0].As<Napi::Object>();
  const mixq::ModelConfig& cfg = s.model->config();

  std::vector<int32_t> prompt = intArray(env, req.Get("prompt"), "prompt", cfg.vocab_size);
  if (prompt.empty()) throw Napi::RangeError::New(env, "prompt must hold at least one token id");
  mixq::GenerateOptions opts;
  opts.max_tokens = optInt(req, "maxTokens", opts.max_tokens, 0);
  opts.sampling.greedy = optBool(req, "greedy", true);
  opts.sampling.temperature = static_cast<float>(optNumber(req, "temperature", opts.sampling.temperature));
  opts.sampling.top_k = optInt(req, "topK", 0, 0);
  opts.sampling.top_p = static_cast<float>(optNumber(req, "topP", opts.sampling.top_p));
  double seed = optNumber(req, "seed", 0);
  if (seed < 0 || seed > 9007199254740991.0 || seed != static_cast<double>(static_cast<uint64_t>(seed))) {
    throw Napi::RangeError::New(env, "seed must be an integer in [0, 2^53)");
  }
  opts.sampling.seed = static_cast<uint64_t>(seed);
  if (!(opts.sampling.temperature > 0)) throw Napi::RangeError::New(env, "temperature must be > 0");
  if (!(opts.sampling.top_p > 0 && opts.sampling.top_p <= 1)) throw Napi::RangeError::New(env, "topP must be in (0, 1]");
  Napi::Value stopIds = req.Get("stopIds");
  if (!stopIds.IsUndefined() && !stopIds.IsNull()) opts.stop_ids = intArray(env, stopIds, "stopIds", cfg.vocab_size);
  opts.ignore_eos = optBool(req, "ignoreEos", false);

  bool streaming = info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull();
  if (streaming && !info[1].IsFunction()) throw Napi::TypeError::New(env, "generate(req, onToken?): onToken must be a function");

  Napi::Object handle = Napi::Object::New(env);
  bool expected = false;
  if (!s.busy.compare_exchange_strong(expected, true)) {
    // As native.ts documents: the second call's result rejects (the running one is not disturbed).
    auto rejected = Napi::Promise::Deferred::New(env);
    rejected.Reject(Napi::Error::New(env, "a generation is already running on this engine (cancel it and await its result first)").Value());
    handle.Set("result", rejected.Promise());
    handle.Set("cancel", Napi::Function::New(env, [](const Napi::CallbackInfo& ci) { return ci.Env().Undefined(); }, "cancel"));
    return handle;
  }
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  s.currentCancel = cancel;
  auto* worker = new GenerateWorker(env, state_, std::move(prompt), std::move(opts), cancel);
  if (streaming) worker->StreamTo(env, info[1].As<Napi::Function>());

  handle.Set("result", worker->Promise());
  handle.Set("cancel", mixq_addon::CancelFunction(env, cancel));
  worker->Queue();
  return handle;
}

// ---- perplexity ----------------------------------------------------------------------------------------

class PerplexityWorker : public Napi::AsyncWorker {
 public:
  PerplexityWorker(Napi::Env env, std::shared_ptr<EngineState> state, std::vector<int32_t> ids, int windows, int seq,
                   std::shared_ptr<std::atomic<bool>> cancel)
      : Napi::AsyncWorker(env, "mixq.perplexity"), deferred_(Napi::Promise::Deferred::New(env)),
        state_(std::move(state)), ids_(std::move(ids)), windows_(windows), seq_(seq), cancel_(std::move(cancel)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      result_ = mixq::perplexity(*state_->context, ids_.data(), ids_.size(), windows_, seq_, cancel_.get());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Finish();
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("ppl", result_.ppl);
    o.Set("tokens", static_cast<double>(result_.tokens));
    o.Set("nll", result_.nll);
    o.Set("ms", result_.ms);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override {
    Finish();
    deferred_.Reject(e.Value());
  }

 private:
  void Finish() {
    if (state_->currentCancel == cancel_) state_->currentCancel.reset();
    state_->busy = false;
  }
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<EngineState> state_;
  std::vector<int32_t> ids_;
  int windows_, seq_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  mixq::PerplexityResult result_;
};

// perplexity(ids: Int32Array, windows, seq) → Promise<NativePerplexityResult>
Napi::Value EngineWrap::Perplexity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineState& s = live(env);
  if (info.Length() < 3 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw Napi::TypeError::New(env, "perplexity(ids: Int32Array, windows: number, seq: number)");
  }
  Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
  // Copied: the worker must not read a buffer the JS side may detach or change meanwhile.
  std::vector<int32_t> ids(arr.Data(), arr.Data() + arr.ElementLength());
  int windows = info[1].As<Napi::Number>().Int32Value();
  int seq = info[2].As<Napi::Number>().Int32Value();
  if (windows < 1 || seq < 2) throw Napi::RangeError::New(env, "perplexity: windows must be >= 1 and seq >= 2");
  bool expected = false;
  if (!s.busy.compare_exchange_strong(expected, true)) {
    throw Napi::Error::New(env, "a generation is already running on this engine");
  }
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  s.currentCancel = cancel;
  auto* worker = new PerplexityWorker(env, state_, std::move(ids), windows, seq, cancel);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- bench ---------------------------------------------------------------------------------------------

class BenchWorker : public Napi::AsyncWorker {
 public:
  BenchWorker(Napi::Env env, mixq::BenchOptions opts)
      : Napi::AsyncWorker(env, "mixq.bench"), deferred_(Napi::Promise::Deferred::New(env)), opts_(std::move(opts)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override {
    try {
      result_ = mixq::run_bench(opts_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("prefillTokensPerSec", result_.prefill_tokens_per_sec);
    o.Set("decodeTokensPerSec", result_.decode_tokens_per_sec);
    o.Set("prefillTokens", result_.prefill_tokens);
    o.Set("decodeTokens", result_.decode_tokens);
    o.Set("decodeMsPerLayer", result_.decode_ms_per_layer);
    o.Set("weightBytesPerToken", result_.weight_bytes_per_token);
    o.Set("memcpyGBps", result_.memcpy_gbps);
    o.Set("bandwidthRatio", result_.bandwidth_ratio);
    Napi::Object deviceCopy = Napi::Object::New(env);
    for (const auto& [name, gbps] : result_.device_copy_gbps) deviceCopy.Set(name, gbps);
    o.Set("deviceCopyGBps", deviceCopy);
    o.Set("decodeStepMode", result_.decode_step_mode);
    o.Set("peakRssBytes", static_cast<double>(result_.peak_rss_bytes));
    o.Set("description", result_.description);
    o.Set("decodeHeadMs", result_.decode_head_ms);
    Napi::Array layerMs = Napi::Array::New(env, result_.decode_layer_ms.size());
    for (size_t i = 0; i < result_.decode_layer_ms.size(); i++) layerMs.Set(static_cast<uint32_t>(i), result_.decode_layer_ms[i]);
    o.Set("decodeLayerMs", layerMs);
    o.Set("weightGBps", result_.weight_gbps);
    o.Set("loadMs", result_.load_ms);
    o.Set("threads", result_.threads);
    Napi::Array features = Napi::Array::New(env, result_.cpu_features.size());
    for (size_t i = 0; i < result_.cpu_features.size(); i++) features.Set(static_cast<uint32_t>(i), result_.cpu_features[i]);
    o.Set("cpuFeatures", features);
    if (result_.profiled) o.Set("profile", ProfileObject(env, result_.profile));
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  mixq::BenchOptions opts_;
  mixq::BenchResult result_;
};

// bench(opts) → Promise<NativeBenchResult>
Napi::Value Bench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "bench(opts): opts must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  mixq::BenchOptions opts;
  opts.model_dir = optString(o, "model", "");
  opts.synthetic = optString(o, "synthetic", "");
  if (opts.model_dir.empty() == opts.synthetic.empty()) {
    throw Napi::TypeError::New(env, "bench(opts): give exactly one of model and synthetic");
  }
  opts.layers = optInt(o, "layers", opts.layers, 0);
  opts.weights = optString(o, "weights", opts.weights);
  opts.prefill_tokens = optInt(o, "prefillTokens", opts.prefill_tokens, 1);
  opts.decode_tokens = optInt(o, "decodeTokens", opts.decode_tokens, 1);
  opts.threads = optInt(o, "threads", opts.threads, 0);
  opts.device = optString(o, "device", opts.device);
  opts.profile = optBool(o, "profile", false);
  opts.memcpy_bytes = static_cast<size_t>(optInt(o, "memcpyMib", 1024, 1)) << 20;
  ParsePlacement(env, o, &opts.devices, &opts.placement, &opts.split);
  auto* worker = new BenchWorker(env, opts);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// measureCopyBandwidth({mib, threads?, device?}) → Promise<number>: the copy ceiling of `device` (default the host:
// memcpy; a GPU: a copy within its memory), GB/s read + write, on a worker thread.
class CopyBandwidthWorker : public Napi::AsyncWorker {
 public:
  CopyBandwidthWorker(Napi::Env env, size_t bytes, int threads, std::string device)
      : Napi::AsyncWorker(env, "mixq.measureCopyBandwidth"), deferred_(Napi::Promise::Deferred::New(env)),
        bytes_(bytes), threads_(threads), device_(std::move(device)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override {
    try {
      gbps_ = mixq::measure_device_copy_gbps(device_, bytes_, threads_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), gbps_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  size_t bytes_;
  int threads_;
  std::string device_;
  double gbps_ = 0;
};

Napi::Value MeasureCopyBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "measureCopyBandwidth({mib, threads?, device?})");
  Napi::Object o = info[0].As<Napi::Object>();
  const int mib = optInt(o, "mib", 256, 1);
  const std::string device = optString(o, "device", "cpu");
  try {
    mixq::Device::parse(device);
  } catch (const std::exception& e) {
    throw Napi::TypeError::New(env, std::string("measureCopyBandwidth: ") + e.what());
  }
  auto* worker = new CopyBandwidthWorker(env, static_cast<size_t>(mib) << 20, optInt(o, "threads", 0, 0), device);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- module --------------------------------------------------------------------------------------------

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Array arr = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (const mixq::Device& d : mixq::available_devices()) arr.Set(i++, d.str());
  return arr;
}

Napi::Value CpuFeatures(const Napi::CallbackInfo& info) {
  Napi::Array arr = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (const std::string& f : mixq::make_backend(mixq::Device{})->features()) arr.Set(i++, f);
  return arr;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->engineConstructor = Napi::Persistent(EngineWrap::Define(env));
  env.SetInstanceData(data);
  exports.Set("version", "0.1.0");
  exports.Set("cudaCompiled", Napi::Boolean::New(env, mixq::backend_registered(mixq::DeviceKind::Cuda)));
  exports.Set("devices", Napi::Function::New(env, Devices, "devices"));
  exports.Set("cpuFeatures", Napi::Function::New(env, CpuFeatures, "cpuFeatures"));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel, "loadModel"));
  exports.Set("bench", Napi::Function::New(env, Bench, "bench"));
  exports.Set("measureCopyBandwidth", Napi::Function::New(env, MeasureCopyBandwidth, "measureCopyBandwidth"));
  mixq_addon::InitQuantize(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(mixq, Init)
