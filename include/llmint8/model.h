// Loading a Hugging Face model directory and running it.
//
//   auto model = llmint8::Model::load("models/stories260K", {.precision = Precision::Int8});
//   auto session = model->new_session();
//   std::vector<float> logits;
//   session->forward(ids, &logits);       // logits of the last position, [vocab]
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmint8 {

// How Linear weights are held and multiplied. Int8 = LLM.int8() (the default); the others keep
// every weight in that floating type.
enum class Precision { Int8, F16, BF16, F32 };
std::string_view precision_name(Precision p);              // "int8", "fp16", "bf16", "fp32"
bool parse_precision(std::string_view s, Precision* out);  // accepts the names above

struct LoadOptions {
  Precision precision = Precision::Int8;
  float threshold = 6.0f;  // outlier threshold of the decomposition; 0 turns it off
  // A pre-quantized checkpoint's quantization_config.llm_int8_threshold replaces `threshold`
  // unless this is false (the CLI clears it when --threshold is given).
  bool threshold_from_checkpoint = true;
  // Modules kept in 16-bit under Int8, like transformers' llm_int8_skip_modules: a Linear whose
  // name equals an entry or has it as a dotted component ("lm_head", "mlp.down_proj") is skipped.
  // lm_head and tied output embeddings are always kept.
  std::vector<std::string> skip_modules;
  int threads = 0;           // 0 = all cores
  std::string device = "cpu";
  // GPU models: keep the input embedding table in GPU memory as well. By default a table that
  // lm_head does not share stays in pinned host memory, from which each forward pass reads only
  // its tokens' rows over PCIe (Llama-3-8B: 1.0 GiB less GPU memory, the values unchanged).
  bool gpu_embeddings = false;
  // Called as tensors are read: (bytes done, bytes total).
  std::function<void(uint64_t, uint64_t)> progress;
  // Analysis hook (`llmint8 outliers`): when set, called with the input X [M, K] (row-major
  // float32) of every Linear that LLM.int8() quantizes (not lm_head / tied embeddings), under any
  // precision, just before that Linear runs. Called from the forward's thread; must not keep X.
  std::function<void(const std::string& module, const float* X, int64_t M, int64_t K)> activation_observer;
  // Going beyond bitsandbytes (`--keep-outlier-columns`, numerics in include/llmint8/backend.h):
  // per quantized Linear (full module name, e.g. "model.layers.0.mlp.up_proj"), input columns
  // whose fp16 weight columns are kept beside its int8 weight; the outlier product then uses those
  // exact weights instead of the dequantized int8 ones. Under Int8, from a 16/32-bit checkpoint
  // (an 8-bit checkpoint saved with kept columns brings its own and refuses these); every name
  // must be a Linear that LLM.int8() may quantize (one on the skip list ignores its entry).
  // calibrate_kept_columns (include/llmint8/runtime.h) finds them from a calibration text.
  std::map<std::string, std::vector<int32_t>> kept_columns;
};

struct ModelInfo {
  std::string architecture;   // e.g. "LlamaForCausalLM"
  std::string model_type;     // e.g. "llama"
  std::string precision;      // "int8", ...
  float threshold = 0.f;
  int64_t parameters = 0;
  int64_t layers = 0, hidden_size = 0, heads = 0, kv_heads = 0, vocab_size = 0;
  std::vector<std::string> quantized_modules;  // Linear names held in int8
  std::vector<std::string> float_modules;      // Linear names held in floating point
  int64_t kept_columns = 0;  // fp16 weight columns kept beside the int8 weights, all Linears together
  uint64_t weight_bytes_16bit = 0;  // all weights as 16-bit
  uint64_t weight_bytes = 0;        // all weights as held now (int8 + SCB + the rest)
  uint64_t host_weight_bytes = 0;   // of those, held in host memory by a GPU model (embeddings)
  uint64_t checkpoint_bytes = 0;    // tensor bytes in the files read
  uint64_t peak_rss_bytes = 0;      // process peak resident memory measured after loading
  uint64_t largest_tensor_bytes = 0;
};

// One sequence's state: the KV cache and the position.
class Session {
 public:
  virtual ~Session() = default;
  // Runs `tokens` after those already in the cache. logits gets [vocab] for the last token, or
  // [tokens.size(), vocab] when all_logits.
  virtual void forward(std::span<const int32_t> tokens, std::vector<float>* logits,
                       bool all_logits = false) = 0;
  virtual void reset() = 0;
  virtual int64_t position() const = 0;
};

// Several sequences decoded together. Each step() feeds one token to every sequence, so the
// Linears multiply a batch of rows at once (on a GPU that costs about what one row does: the
// weights are read once per step for the whole batch). Sequences have their own KV cache and
// position; they may be at different positions.
//
//   auto batch = model->new_batch_session(8);
//   for (int b = 0; b < 8; ++b) batch->forward(b, prompt[b], &logits);  // prefill each one
//   batch->step(next_ids, &logits);                                      // logits [8, vocab]
class BatchSession {
 public:
  virtual ~BatchSession() = default;
  virtual int64_t batch_size() const = 0;
  // Runs `tokens` after those already in sequence b's cache (a prompt); logits gets [vocab] of the
  // last token when given.
  virtual void forward(int64_t b, std::span<const int32_t> tokens, std::vector<float>* logits) = 0;
  // One token for every sequence (tokens.size() == batch_size()); logits gets [batch, vocab].
  virtual void step(std::span<const int32_t> tokens, std::vector<float>* logits) = 0;
  virtual int64_t position(int64_t b) const = 0;
  virtual void reset() = 0;  // every sequence back to position 0
};

class Model {
 public:
  virtual ~Model() = default;
  // Throws Error naming the file and the problem.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& opts = {});
  virtual const ModelInfo& info() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_context() const = 0;  // max_position_embeddings (or n_positions / seq_length)
  virtual int32_t bos_id() const = 0;       // from config.json; -1 when absent
  virtual int32_t eos_id() const = 0;
  // Every end-of-sequence id (Llama-3 lists several): generation_config.json's eos_token_id when
  // that file gives one (what transformers' generate() stops on), else config.json's; the first
  // equals eos_id(). Empty when neither gives one.
  virtual std::vector<int32_t> eos_ids() const {
    const int32_t e = eos_id();
    return e < 0 ? std::vector<int32_t>{} : std::vector<int32_t>{e};
  }
  // max_tokens: KV cache capacity; 0 = max_context().
  virtual std::unique_ptr<Session> new_session(int64_t max_tokens = 0) = 0;
  // `batch` sequences of up to max_tokens each (0 = max_context()). The GPU model batches the
  // step for real; the default (the CPU model) runs the sequences one after another.
  virtual std::unique_ptr<BatchSession> new_batch_session(int64_t batch, int64_t max_tokens = 0);
};

}  // namespace llmint8
