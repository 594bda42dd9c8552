// `llmint8 quantize`: convert a 16/32-bit Hugging Face checkpoint into an 8-bit one in the layout
// transformers + bitsandbytes save (load_in_8bit): per quantized Linear <p>,
//   <p>.weight         I8  [out, in]  CB, row-major (for GPT-2's Conv1D too: [out, in], as
//                                     transformers transposes Conv1D weights before quantizing)
//   <p>.SCB            F32 [out]
//   <p>.weight_format  U8  []         0 (row-major; the only format bitsandbytes writes now)
// every other tensor in its 16-bit dtype (F32 checkpoints become F16), and config.json gains a
// quantization_config {"quant_method": "bitsandbytes", "load_in_8bit": true, ...}.
// With kept columns (--keep-outlier-columns, QuantizeOptions::kept_columns), a Linear that has
// some also gets
//   <p>.kept_columns   I32 [n]        the kept input-column indices, ascending
//   <p>.kept_weight    F16 [out, n]   their fp16 weight columns (the fp16-cast weight CB is
//                                     quantized from; [out, n] for Conv1D too)
// which llmint8 loads beside CB/SCB (include/llmint8/backend.h). Nothing else changes, and no
// config key is added: transformers + bitsandbytes load such a directory as a plain 8-bit
// checkpoint, report the two extra tensors as unused weights, and run bitsandbytes' numerics.
//
// Streaming: one tensor at a time is read, converted and written, so memory stays around the
// largest tensor (as float32) whatever the checkpoint's size. Atomic: everything is written into
// "<out>.tmp-<pid>" (config.json last) and renamed to <out> at the end; an interrupted run never
// leaves a directory at <out>. The quantization numerics are the loader's (quantize_rowwise on the
// fp16-rounded weight), so quantize-then-load gives the same CB/SCB as quantizing at load.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "llmint8/dtype.h"

namespace llmint8::model {

struct QuantizeOptions {
  float threshold = 6.0f;                 // recorded as llm_int8_threshold
  std::vector<std::string> skip_modules;  // kept in 16-bit, besides lm_head and tied embeddings
  // Per quantized Linear (full module name), input columns whose fp16 weight columns are saved
  // beside its int8 weight (ascending, unique, < in_features); usually from
  // calibrate_kept_columns (include/llmint8/runtime.h). Every name must be a quantized Linear.
  std::map<std::string, std::vector<int32_t>> kept_columns;
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
  enum class Kind { Copy16, CB, SCB, Format, KeptColumns, KeptWeight } kind;
  std::string module = {};  // the Linear, for CB and the kept-column tensors
  uint64_t bytes() const;
};

struct QuantizePlan {
  std::vector<PlannedTensor> tensors;
  std::vector<std::string> quantized;  // module names
  std::vector<std::string> kept;       // Linear modules left in 16-bit by the skip list
  int64_t kept_columns = 0;            // fp16 weight columns saved beside the int8 weights
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
