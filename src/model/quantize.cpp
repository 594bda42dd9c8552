#include "model/quantize.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "io/read_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "llmint8/backend.h"
#include "llmint8/error.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/transformer.h"

namespace llmint8::model {
namespace fs = std::filesystem;

uint64_t PlannedTensor::bytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

namespace {

// Files a model directory carries besides weights and config.json, with the most each may hold
// (read whole, so capped before reading: io/read_file.h).
struct CopiedFile {
  const char* name;
  uint64_t cap;
};
constexpr CopiedFile kCopiedFiles[] = {
    {"tokenizer.json", io::kMaxTokenizerFileBytes},       {"tokenizer.model", io::kMaxTokenizerFileBytes},
    {"tokenizer_config.json", io::kMaxConfigFileBytes},   {"special_tokens_map.json", io::kMaxConfigFileBytes},
    {"generation_config.json", io::kMaxConfigFileBytes},  {"vocab.json", io::kMaxTokenizerFileBytes},
    {"merges.txt", io::kMaxTokenizerFileBytes},           {"added_tokens.json", io::kMaxConfigFileBytes}};

struct Source {
  ModelConfig config;
  ArchSpec spec;
  std::unique_ptr<io::Checkpoint> ckpt;
  bool strip_prefix = false;
  // The name a full module/tensor name has in this checkpoint.
  std::string tname(const std::string& n) const {
    if (strip_prefix && n.rfind(spec.base_prefix, 0) == 0) return n.substr(spec.base_prefix.size());
    return n;
  }
};

Source open_source(const std::string& dir) {
  Source s{load_config(dir), {}, nullptr, false};
  s.spec = arch_for(s.config);
  s.ckpt = io::Checkpoint::open(dir);
  s.strip_prefix = !s.ckpt->find(s.spec.embed) && !s.spec.base_prefix.empty() &&
                   s.ckpt->find(s.spec.embed.substr(s.spec.base_prefix.size()));
  return s;
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

QuantizePlan make_plan(const Source& src, const QuantizeOptions& opts) {
  const io::Checkpoint& ck = *src.ckpt;
  QuantizePlan plan;
  for (const auto& n : ck.names()) {
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".SCB") == 0)
      throw Error(ck.dir() + ": already an 8-bit checkpoint (tensor '" + n + "')");
    const io::TensorInfo& t = *ck.find(n);
    plan.input_bytes += t.nbytes;
    if (t.dtype == DType::BF16) plan.float_dtype = DType::BF16;
  }
  // Every tensor the loader reads, with the shape and type it reads it with: a checkpoint that
  // does not match its config.json is refused here, not written out for the loader to refuse.
  for (const ExpectedTensor& e : expected_tensors(src.spec, src.config)) {
    const io::TensorInfo& t = ck.get(src.tname(e.name), e.shape);  // throws naming the tensor
    if (!is_float(t.dtype))
      throw Error(*t.file + ": tensor '" + t.name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                  ", expected F32, F16 or BF16");
  }
  // Which tensors are quantized Linear weights: weight tensor -> (module, [out, in]).
  std::map<std::string, std::pair<std::string, std::pair<int64_t, int64_t>>> linear_of_weight;
  for (const std::string& m : quantizable_linears(src.spec, src.config)) {
    bool skip = false;
    for (const auto& e : opts.skip_modules) skip = skip || module_matches(m, e);
    const std::string wname = src.tname(m + ".weight");
    const io::TensorInfo& w = ck.get(wname);  // throws naming the missing tensor
    if (w.shape.size() != 2)
      throw Error(*w.file + ": tensor '" + wname + "' has shape " + w.shape_str() + ", expected a matrix");
    if (!is_float(w.dtype))
      throw Error(*w.file + ": tensor '" + wname + "' has dtype " + std::string(dtype_name(w.dtype)) +
                  ", expected F32, F16 or BF16");
    if (skip) {
      plan.kept.push_back(m);
      continue;
    }
    plan.quantized.push_back(m);
    const int64_t out = src.spec.conv1d ? w.shape[1] : w.shape[0];
    const int64_t in = src.spec.conv1d ? w.shape[0] : w.shape[1];
    linear_of_weight[wname] = {m, {out, in}};
    if (const auto k = opts.kept_columns.find(m); k != opts.kept_columns.end()) {
      const std::vector<int32_t>& cols = k->second;
      for (size_t j = 0; j < cols.size(); ++j)
        if (cols[j] < 0 || cols[j] >= in || (j > 0 && cols[j] <= cols[j - 1]))
          throw Error(m + ": kept column indices must be ascending, unique and < " + std::to_string(in) +
                      " (index " + std::to_string(j) + " is " + std::to_string(cols[j]) + ")");
    }
  }
  for (const auto& [m, cols] : opts.kept_columns)
    if (std::find(plan.quantized.begin(), plan.quantized.end(), m) == plan.quantized.end())
      throw Error("kept columns given for '" + m + "', which is no Linear quantized in " + ck.dir());
  for (const auto& n : ck.names()) {
    const io::TensorInfo& t = *ck.find(n);
    const auto it = linear_of_weight.find(n);
    if (it != linear_of_weight.end()) {
      const std::string p = n.substr(0, n.size() - 7);  // strip ".weight"
      const std::string& m = it->second.first;
      const auto [out, in] = it->second.second;
      plan.tensors.push_back({n, n, DType::I8, {out, in}, PlannedTensor::Kind::CB, m});
      plan.tensors.push_back({p + ".SCB", n, DType::F32, {out}, PlannedTensor::Kind::SCB});
      plan.tensors.push_back({p + ".weight_format", n, DType::U8, {}, PlannedTensor::Kind::Format});
      if (const auto k = opts.kept_columns.find(m); k != opts.kept_columns.end() && !k->second.empty()) {
        const int64_t nk = int64_t(k->second.size());
        plan.tensors.push_back({p + ".kept_columns", n, DType::I32, {nk}, PlannedTensor::Kind::KeptColumns, m});
        plan.tensors.push_back({p + ".kept_weight", n, DType::F16, {out, nk}, PlannedTensor::Kind::KeptWeight, m});
        plan.kept_columns += nk;
      }
    } else {
      // Floats become the checkpoint's 16-bit type; anything else (e.g. integer buffers) as is.
      plan.tensors.push_back({n, n, is_float(t.dtype) ? plan.float_dtype : t.dtype, t.shape,
                              PlannedTensor::Kind::Copy16});
    }
  }
  for (const auto& t : plan.tensors) plan.output_bytes += t.bytes();
  return plan;
}

// Reads a float tensor into float32, transposing GPT-2's Conv1D [in, out] to [out, in].
std::vector<float> read_weight(const io::TensorInfo& t, bool conv1d) {
  std::vector<float> w(size_t(t.numel()));
  io::Checkpoint::read_f32(t, w.data());
  if (!conv1d) return w;
  const int64_t in = t.shape[0], out = t.shape[1];
  std::vector<float> tr(w.size());
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) tr[size_t(o * in + i)] = w[size_t(i * out + o)];
  return tr;
}

std::string shard_name(size_t i, size_t n) {
  if (n == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

nlohmann::json quantization_config(const QuantizeOptions& opts) {
  // The keys transformers' BitsAndBytesConfig(load_in_8bit=True).to_dict() writes.
  nlohmann::json q = {
      {"quant_method", "bitsandbytes"},
      {"load_in_8bit", true},
      {"load_in_4bit", false},
      {"_load_in_8bit", true},
      {"_load_in_4bit", false},
      {"llm_int8_threshold", opts.threshold},
      {"llm_int8_skip_modules", nullptr},
      {"llm_int8_enable_fp32_cpu_offload", false},
      {"llm_int8_has_fp16_weight", false},
      {"bnb_4bit_compute_dtype", "float32"},
      {"bnb_4bit_quant_storage", "uint8"},
      {"bnb_4bit_quant_type", "fp4"},
      {"bnb_4bit_use_double_quant", false},
  };
  if (!opts.skip_modules.empty()) q["llm_int8_skip_modules"] = opts.skip_modules;
  return q;
}

void write_outputs(const Source& src, const QuantizePlan& plan, const std::string& tmp,
                   const QuantizeOptions& opts, std::vector<std::string>* shards) {
  // Shards: consecutive runs of the plan under max_shard_bytes (a larger tensor gets its own).
  std::vector<std::pair<size_t, size_t>> runs;  // [begin, end) into plan.tensors
  uint64_t acc = 0;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const uint64_t b = plan.tensors[i].bytes();
    if (runs.empty() || (acc + b > opts.max_shard_bytes && acc > 0)) {
      runs.push_back({i, i});
      acc = 0;
    }
    runs.back().second = i + 1;
    acc += b;
  }
  if (runs.empty()) throw Error(src.ckpt->dir() + ": the checkpoint holds no tensors");

  auto backend = make_cpu_backend(opts.threads);
  std::map<std::string, std::string> weight_map;
  uint64_t done = 0;
  std::vector<int8_t> cb;
  std::vector<float> scb;
  std::vector<uint16_t> kept_w;  // the fp16 kept columns of the last CB written
  for (size_t s = 0; s < runs.size(); ++s) {
    const std::string name = shard_name(s, runs.size());
    io::SafetensorsWriter w(tmp + "/" + name, {{"format", "pt"}});
    for (size_t i = runs[s].first; i < runs[s].second; ++i)
      w.add(plan.tensors[i].name, plan.tensors[i].dtype, plan.tensors[i].shape);
    for (size_t i = runs[s].first; i < runs[s].second; ++i) {
      const PlannedTensor& p = plan.tensors[i];
      const io::TensorInfo& t = *src.ckpt->find(p.source);
      weight_map[p.name] = name;
      switch (p.kind) {
        case PlannedTensor::Kind::Copy16: {
          if (t.dtype == p.dtype) {
            w.write(p.name, t.data);  // straight from the mapping
          } else {
            std::vector<float> f(size_t(t.numel()));
            io::Checkpoint::read_f32(t, f.data());
            std::vector<uint16_t> h(f.size());
            for (size_t k = 0; k < f.size(); ++k)
              h[k] = p.dtype == DType::BF16 ? to_bf16(f[k]).bits : to_f16(f[k]).bits;
            w.write(p.name, h.data());
          }
          break;
        }
        case PlannedTensor::Kind::CB: {
          const int64_t out = p.shape[0], in = p.shape[1];
          std::vector<float> wf = read_weight(t, src.spec.conv1d);
          // As the loader: bitsandbytes quantizes the fp16-cast weight.
          for (float& x : wf) x = to_float(to_f16(x));
          cb.resize(size_t(out * in));
          scb.resize(size_t(out));
          backend->quantize_rowwise(DType::F32, wf.data(), out, in, 0.f, cb.data(), scb.data(), nullptr);
          w.write(p.name, cb.data());
          kept_w.clear();
          if (const auto k = opts.kept_columns.find(p.module); k != opts.kept_columns.end()) {
            const std::vector<int32_t>& cols = k->second;
            const int64_t nk = int64_t(cols.size());
            kept_w.resize(size_t(out) * size_t(nk));
            for (int64_t o = 0; o < out; ++o)
              for (int64_t j = 0; j < nk; ++j)
                kept_w[size_t(o * nk + j)] = to_f16(wf[size_t(o * in + cols[size_t(j)])]).bits;
          }
          break;
        }
        case PlannedTensor::Kind::KeptColumns:
          w.write(p.name, opts.kept_columns.at(p.module).data());
          break;
        case PlannedTensor::Kind::KeptWeight:
          w.write(p.name, kept_w.data());
          break;
        case PlannedTensor::Kind::SCB:
          w.write(p.name, scb.data());
          break;
        case PlannedTensor::Kind::Format: {
          const uint8_t zero = 0;
          w.write(p.name, &zero);
          break;
        }
      }
      if (p.kind == PlannedTensor::Kind::Copy16 || p.kind == PlannedTensor::Kind::CB) {
        src.ckpt->release_pages(t);
        done += t.nbytes;
        if (opts.progress) opts.progress(done, plan.input_bytes);
      }
    }
    w.commit();
    shards->push_back(name);
  }
  if (runs.size() > 1)
    io::write_safetensors_index(tmp + "/model.safetensors.index.json", plan.output_bytes, weight_map);

  for (const CopiedFile& f : kCopiedFiles) {
    const std::string from = (fs::path(src.ckpt->dir()) / f.name).string();
    if (io::path_exists(from)) io::write_file_atomic(tmp + "/" + f.name, io::read_file_capped(from, f.cap));
  }
  // config.json last: a directory without it is no model, whatever else it holds.
  nlohmann::json cfg;
  const std::string cfg_path = src.ckpt->dir() + "/config.json";
  try {
    cfg = nlohmann::json::parse(io::read_file_capped(cfg_path, io::kMaxConfigFileBytes));
  } catch (const nlohmann::json::exception& e) {
    throw Error(cfg_path + ": invalid JSON: " + e.what());
  }
  cfg["quantization_config"] = quantization_config(opts);
  const char* dtype_key = cfg.contains("torch_dtype") && !cfg.contains("dtype") ? "torch_dtype" : "dtype";
  cfg[dtype_key] = plan.float_dtype == DType::BF16 ? "bfloat16" : "float16";
  io::write_file_atomic(tmp + "/config.json", cfg.dump(2) + "\n");
}

}  // namespace

QuantizePlan plan_quantized_checkpoint(const std::string& dir, const QuantizeOptions& opts) {
  return make_plan(open_source(dir), opts);
}

QuantizeResult quantize_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                   const QuantizeOptions& opts) {
  if (!(opts.threshold >= 0.f) || !std::isfinite(opts.threshold))
    throw Error("threshold must be a finite number >= 0, got " + std::to_string(opts.threshold));
  if (opts.max_shard_bytes == 0) throw Error("the shard size limit must be positive");
  std::error_code ec;
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.has_filename() == false) out = out.parent_path();  // "dir/" -> "dir"
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec) || !fs::is_empty(out, ec))
      throw Error(out.string() + ": already exists (choose a new output directory)");
  }
  if (fs::weakly_canonical(out, ec) == fs::weakly_canonical(in_dir, ec))
    throw Error(out.string() + ": the output directory must differ from the input");
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec)) throw Error(parent.string() + ": no such directory");

  Source src = open_source(in_dir);
  QuantizeResult result;
  result.plan = make_plan(src, opts);

  const std::string tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) throw Error(tmp + ": cannot create: " + ec.message());
  try {
    write_outputs(src, result.plan, tmp, opts, &result.shards);
    if (fs::exists(out, ec)) fs::remove(out);  // an empty directory, checked above
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return result;
}

}  // namespace llmint8::model
