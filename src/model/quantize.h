// `llmint8 quantize`: convert a 16/32-bit Hugging Face checkpoint into an 8-bit one in the layout
// transformers + bitsandbytes save (load_in_8bit): per quantized Linear <p>,
//   <p>.weight         I8  [out, in]  CB, row-major (for GPT-2's Conv1D too: [out, in], as
//                                     transformers transposes Conv1D weights before quantizing)
//   <p>.SCB            F32 [out]
//   <p>.weight_format  U8  []         0 (row-major; the only format bitsandbytes writes now)
// every other tensor in its 16-bit dtype (F32 checkpoints become F16), and config.json gains a
// quantization_config {"quant_method": "bitsandbytes", "load_in_8bit": true, ...}.
//
// Streaming: one tensor at a time is read, converted and written, so memory stays around the
// largest tensor (as float32) whatever the checkpoint's size. Atomic: everything is written into
// "<out>.tmp-<pid>" (config.json last) and renamed to <out> at the end; an interrupted run never
// leaves a directory at <out>. The quantization numerics are the loader's (quantize_rowwise on the
// fp16-rounded weight), so quantize-then-load gives the same CB/SCB as quantizing at load.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llmint8/dtype.h"

namespace llmint8::model {

struct QuantizeOptions {
  float threshold = 6.0f;                 // recorded as llm_int8_threshold
  std::vector<std::string> skip_modules;  // kept in 16-bit, besides lm_head and tied embeddings
  uint64_t max_shard_bytes = 5ull << 30;  // transformers' default max_shard_size ("5GB")
  int threads = 0;
  // (bytes of input read, bytes total). May throw to abort; the output is then removed.
  std::function<void(uint64_t, uint64_t)> progress;
};

// One tensor of the output checkpoint.
struct PlannedTensor {
  std::string name;    // output name
  std::string source;  // input tensor it comes from
  DType dtype;
  std::vector<int64_t> shape;
  enum class Kind { Copy16, CB, SCB, Format } kind;
  uint64_t bytes() const;
};

struct QuantizePlan {
  std::vector<PlannedTensor> tensors;
  std::vector<std::string> quantized;  // module names
  std::vector<std::string> kept;       // Linear modules left in 16-bit by the skip list
  uint64_t input_bytes = 0;            // tensor bytes of the input checkpoint
  uint64_t output_bytes = 0;           // tensor bytes of the output checkpoint
  DType float_dtype = DType::F16;      // 16-bit type of the non-quantized tensors
};

// What `quantize` would write for the checkpoint in `dir` (validates config and shapes).
QuantizePlan plan_quantized_checkpoint(const std::string& dir, const QuantizeOptions& opts);

struct QuantizeResult {
  QuantizePlan plan;
  std::vector<std::string> shards;  // file names written in out_dir
};

// Throws Error when in_dir is not a supported 16/32-bit checkpoint, is already quantized, or
// out_dir exists and is not an empty directory.
QuantizeResult quantize_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                   const QuantizeOptions& opts);

}  // namespace llmint8::model
