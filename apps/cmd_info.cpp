// llmint8 info: what a model is and how it is held in memory after loading.
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "llmint8/error.h"
#include "model/quantize.h"

namespace llmint8::cli {
namespace {

struct InfoArgs {
  CommonOptions common;
};

std::string mib(uint64_t b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / (1024.0 * 1024.0));
  return buf;
}

int run_info(InfoArgs& a) {
  auto model = load_model(a.common);
  const ModelInfo& i = model->info();
  const double ratio = i.weight_bytes_16bit ? double(i.weight_bytes) / double(i.weight_bytes_16bit) : 0.0;
  // On disk: what `llmint8 quantize` would write for a 16/32-bit checkpoint (an 8-bit one already
  // is that: its checkpoint bytes).
  uint64_t int8_disk = 0;
  try {
    model::QuantizeOptions qo;
    qo.skip_modules = a.common.skip;
    int8_disk = model::plan_quantized_checkpoint(a.common.model_dir, qo).output_bytes;
  } catch (const Error&) {
    int8_disk = i.checkpoint_bytes;  // already 8-bit
  }
  if (a.common.json) {
    nlohmann::json j;
    j["model"] = a.common.model_dir;
    j["architecture"] = i.architecture;
    j["model_type"] = i.model_type;
    j["parameters"] = i.parameters;
    j["layers"] = i.layers;
    j["hidden_size"] = i.hidden_size;
    j["heads"] = i.heads;
    j["kv_heads"] = i.kv_heads;
    j["vocab_size"] = i.vocab_size;
    j["max_context"] = model->max_context();
    j["precision"] = i.precision;
    j["threshold"] = i.threshold;
    j["quantized_modules_count"] = i.quantized_modules.size();
    j["quantized_modules"] = i.quantized_modules;
    j["float_modules_count"] = i.float_modules.size();
    j["float_modules"] = i.float_modules;
    j["kept_columns"] = i.kept_columns;
    j["weight_bytes_16bit"] = i.weight_bytes_16bit;
    j["weight_bytes"] = i.weight_bytes;
    j["host_weight_bytes"] = i.host_weight_bytes;
    j["weight_ratio_vs_16bit"] = ratio;
    j["checkpoint_bytes"] = i.checkpoint_bytes;
    j["int8_checkpoint_bytes"] = int8_disk;
    j["peak_rss_bytes"] = i.peak_rss_bytes;
    j["largest_tensor_bytes"] = i.largest_tensor_bytes;
    print_json(j);
  } else {
    std::printf("model              %s\n", a.common.model_dir.c_str());
    std::printf("architecture       %s (%s)\n", i.architecture.c_str(), i.model_type.c_str());
    std::printf("parameters         %lld\n", (long long)i.parameters);
    std::printf("shape              %lld layers, hidden %lld, %lld heads (%lld kv), vocab %lld, context %lld\n",
                (long long)i.layers, (long long)i.hidden_size, (long long)i.heads, (long long)i.kv_heads,
                (long long)i.vocab_size, (long long)model->max_context());
    std::printf("precision          %s, threshold %g\n", i.precision.c_str(), double(i.threshold));
    std::printf("quantized modules  %zu", i.quantized_modules.size());
    if (i.kept_columns) std::printf(" (%lld fp16 weight columns kept beside them)", (long long)i.kept_columns);
    std::printf("\n");
    std::printf("float modules      %zu", i.float_modules.size());
    for (size_t k = 0; k < i.float_modules.size() && k < 8; ++k)
      std::printf("%s%s", k ? ", " : " (", i.float_modules[k].c_str());
    std::printf("%s\n", i.float_modules.empty() ? "" : (i.float_modules.size() > 8 ? ", ...)" : ")"));
    std::printf("weights as 16-bit  %s\n", mib(i.weight_bytes_16bit).c_str());
    std::printf("weights as held    %s (%.3fx of 16-bit)\n", mib(i.weight_bytes).c_str(), ratio);
    if (i.host_weight_bytes > 0)
      std::printf("  in host memory   %s (the input embeddings; --gpu-embeddings keeps them on the GPU)\n",
                  mib(i.host_weight_bytes).c_str());
    std::printf("checkpoint tensors %s on disk; %s as an 8-bit checkpoint (llmint8 quantize)\n",
                mib(i.checkpoint_bytes).c_str(), mib(int8_disk).c_str());
    std::printf("largest tensor     %s\n", mib(i.largest_tensor_bytes).c_str());
    std::printf("peak RSS (loaded)  %s\n", mib(i.peak_rss_bytes).c_str());
  }
  return 0;
}

}  // namespace

Command register_info(CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  CLI::App* sub = app.add_subcommand("info", "Load a model and describe it: shape, quantized modules, memory");
  add_common_options(sub, a->common);
  sub->footer(
      "Example:\n"
      "  llmint8 info -m ../shared/models/stories260K --precision int8 --json");
  return {sub, [a] { return run_info(*a); }};
}

}  // namespace llmint8::cli
