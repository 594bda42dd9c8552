#include "model/transformer.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <numbers>
#include <set>

#include "io/safetensors.h"
#include "llmint8/error.h"
#include "model/linear.h"

namespace llmint8::model {

// ---------------------------------------------------------------------------------------------
// Small helpers

bool module_matches(const std::string& name, const std::string& entry) {
  if (entry.empty()) return false;
  for (size_t p = name.find(entry); p != std::string::npos; p = name.find(entry, p + 1)) {
    const bool start_ok = p == 0 || name[p - 1] == '.';
    const size_t e = p + entry.size();
    const bool end_ok = e == name.size() || name[e] == '.';
    if (start_ok && end_ok) return true;
  }
  return false;
}

int64_t session_capacity(const ModelConfig& c, const ArchSpec& s, int64_t max_tokens) {
  if (max_tokens < 0) throw Error("new_session: max_tokens must be >= 0");
  if (max_tokens == 0) max_tokens = c.max_positions;
  if (s.pos == PosKind::Learned && max_tokens > c.max_positions)
    throw Error("new_session: " + std::to_string(max_tokens) + " tokens exceed the model's " +
                std::to_string(c.max_positions) + " learned positions");
  return max_tokens;
}

uint64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      unsigned long long kb = 0;
      if (std::sscanf(line.c_str() + 6, "%llu", &kb) == 1) return uint64_t(kb) * 1024;
    }
  }
  return 0;
}

// Resets the kernel's peak-RSS counter of this process (Linux >= 4.0), so that the figure
// measured after loading belongs to this load; silently does nothing where unsupported.
static void reset_peak_rss() {
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t dim = c.rotary_dim();
  std::vector<float> inv(size_t(dim / 2));
  // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), all in float32.
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float e = float(2 * i) / float(dim);
    inv[size_t(i)] = 1.0f / std::pow(float(c.rope_theta), e);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") {
    for (float& f : inv) f = f / float(s.factor);
  } else if (s.type == "llama3") {
    // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    const double old_ctx = s.original_max_position_embeddings;
    const double low_wl = old_ctx / s.low_freq_factor, high_wl = old_ctx / s.high_freq_factor;
    for (float& f : inv) {
      const double wl = 2.0 * std::numbers::pi / double(f);
      double v = double(f);
      if (wl > low_wl) {
        v = double(f) / s.factor;
      } else if (wl >= high_wl) {
        const double smooth = (old_ctx / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        v = (1.0 - smooth) * double(f) / s.factor + smooth * double(f);
      }
      f = float(v);
    }
  }
  return inv;
}

std::vector<float> alibi_slopes(int64_t heads) {
  int64_t p2 = 1;
  while (p2 * 2 <= heads) p2 *= 2;
  std::vector<float> s;
  const float base = float(std::pow(2.0, -std::pow(2.0, -(std::log2(double(p2)) - 3))));
  for (int64_t i = 1; i <= p2; ++i) s.push_back(std::pow(base, float(i)));
  if (p2 != heads) {
    const float extra = float(std::pow(2.0, -std::pow(2.0, -(std::log2(double(2 * p2)) - 3))));
    const int64_t rem = std::min(p2, heads - p2);
    for (int64_t i = 0; i < rem; ++i) s.push_back(std::pow(extra, float(2 * i + 1)));
  }
  return s;
}

namespace {

struct Norm {
  std::vector<float> w, b;  // b empty for RMSNorm
};

struct Layer {
  Norm n1, n2;
  Linear q, k, v, qkv, o;
  Linear gate, up, down;
};

// Applies the norm to `rows` rows of x [., H] into y.
void apply_norm(NormKind kind, const Norm& n, double eps, const float* x, float* y, int64_t rows,
                int64_t H) {
#pragma omp parallel for schedule(static) if (rows * H > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * H;
    float* yr = y + r * H;
    if (kind == NormKind::RMSNorm) {
      // transformers' RMSNorm: x * rsqrt(mean(x^2) + eps) * w, in float32.
      double ss = 0;
      for (int64_t i = 0; i < H; ++i) ss += double(xr[i]) * double(xr[i]);
      const float inv = float(1.0 / std::sqrt(ss / double(H) + eps));
      for (int64_t i = 0; i < H; ++i) yr[i] = n.w[size_t(i)] * (xr[i] * inv);
    } else {
      // LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance.
      double mean = 0;
      for (int64_t i = 0; i < H; ++i) mean += xr[i];
      mean /= double(H);
      double var = 0;
      for (int64_t i = 0; i < H; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= double(H);
      const double inv = 1.0 / std::sqrt(var + eps);
      for (int64_t i = 0; i < H; ++i)
        yr[i] = float((double(xr[i]) - mean) * inv) * n.w[size_t(i)] + n.b[size_t(i)];
    }
  }
}

class TransformerModel;

class TransformerSession final : public Session {
 public:
  TransformerSession(TransformerModel& m, int64_t capacity);
  void forward(std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits) override;
  void reset() override { pos_ = 0; }
  int64_t position() const override { return pos_; }

 private:
  friend class TransformerModel;
  TransformerModel& m_;
  int64_t capacity_;
  int64_t pos_ = 0;
  std::vector<std::vector<float>> k_, v_;  // per layer [positions, kv_heads * head_dim]
};

class TransformerModel final : public ConfiguredModel {
 public:
  TransformerModel(const std::string& dir, const LoadOptions& opts);
  std::unique_ptr<Session> new_session(int64_t max_tokens) override {
    max_tokens = capacity_for(max_tokens);
    return std::make_unique<TransformerSession>(*this, max_tokens);
  }

  void run(TransformerSession& s, std::span<const int32_t> tokens, std::vector<float>* logits,
           bool all_logits);
  TransformerView view() const;
  const Linear* find_linear(const std::string& module) const {
    if (lm_head_ && lm_head_->name() == module) return lm_head_;
    for (const Layer& L : layers_)
      for (const Linear* x : {&L.q, &L.k, &L.v, &L.qkv, &L.o, &L.gate, &L.up, &L.down})
        if (x->name() == module) return x;
    return nullptr;
  }

 private:
  // Loading.
  std::string tname(const std::string& n) const;  // strips base_prefix when the checkpoint lacks it
  std::vector<float> read(const std::string& name, const std::vector<int64_t>& shape, DType* dtype);
  Storage float_storage(DType ckpt) const;
  std::vector<float> read_small(const std::string& name, int64_t n);
  void load_linear(Linear& L, const std::string& module, int64_t out, int64_t in, bool bias,
                   bool allow_int8);
  void read_kept_columns(const std::string& module, int64_t out, int64_t in, std::vector<int32_t>* cols,
                         std::vector<uint16_t>* w);
  void load_norm(Norm& n, const std::string& prefix);
  void attention(int64_t l, TransformerSession& s, const float* a, int64_t M, float* out);
  void mlp(int64_t l, const float* a, int64_t M, float* out);

  LoadOptions opts_;
  std::unique_ptr<Backend> backend_;
  // Open while loading; kept open afterwards when int8 weights are read from its mapping.
  std::unique_ptr<io::Checkpoint> ckpt_;
  bool keep_mapping_ = false;
  bool strip_prefix_ = false;
  uint64_t bytes_done_ = 0, bytes_total_ = 0;
  std::set<std::string> kept_seen_;  // names of opts_.kept_columns that matched a quantizable Linear

  Linear embed_, pos_embed_, lm_head_own_;
  const Linear* lm_head_ = nullptr;
  Norm embed_norm_, final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_, slopes_;
  Act act_ = Act::SiLU;
  int threads_ = 1;
};

// ---------------------------------------------------------------------------------------------
// Loading

std::string TransformerModel::tname(const std::string& n) const {
  if (strip_prefix_ && n.rfind(s_.base_prefix, 0) == 0) return n.substr(s_.base_prefix.size());
  return n;
}

std::vector<float> TransformerModel::read(const std::string& name, const std::vector<int64_t>& shape,
                                          DType* dtype) {
  const io::TensorInfo& t = ckpt_->get(tname(name), shape);
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
    throw Error((t.file ? *t.file : ckpt_->dir()) + ": tensor '" + t.name + "' has dtype " +
                std::string(dtype_name(t.dtype)) + ", expected F32, F16 or BF16");
  std::vector<float> buf(size_t(t.numel()));
  io::Checkpoint::read_f32(t, buf.data());
  ckpt_->release_pages(t);  // converted: its mapped pages need not stay resident
  if (dtype) *dtype = t.dtype;
  info_.parameters += t.numel();
  info_.checkpoint_bytes += t.nbytes;
  info_.weight_bytes_16bit += uint64_t(t.numel()) * 2;
  bytes_done_ += t.nbytes;
  if (opts_.progress) opts_.progress(std::min(bytes_done_, bytes_total_), bytes_total_);
  return buf;
}

// Storage of weights that stay in floating point: the requested precision, or under Int8 the
// checkpoint's own type (bitsandbytes keeps non-quantized modules in the load dtype).
Storage TransformerModel::float_storage(DType ckpt) const {
  switch (opts_.precision) {
    case Precision::F32: return Storage::F32;
    case Precision::F16: return Storage::F16;
    case Precision::BF16: return Storage::BF16;
    case Precision::Int8: break;
  }
  return ckpt == DType::F16 ? Storage::F16 : ckpt == DType::BF16 ? Storage::BF16 : Storage::F32;
}

// Norm weights and biases: kept in float32, holding the values of the precision's type, as
// transformers' model.to(dtype) rounds every parameter (under Int8: the checkpoint's own type).
std::vector<float> TransformerModel::read_small(const std::string& name, int64_t n) {
  DType dt = DType::F32;
  std::vector<float> v = read(name, {n}, &dt);
  const Storage st = float_storage(dt);
  if (st == Storage::F16)
    for (float& x : v) x = to_float(to_f16(x));
  else if (st == Storage::BF16)
    for (float& x : v) x = to_float(to_bf16(x));
  return v;
}

void TransformerModel::load_linear(Linear& L, const std::string& module, int64_t out, int64_t in,
                                   bool bias, bool allow_int8) {
  bool int8 = allow_int8 && opts_.precision == Precision::Int8;
  for (const auto& e : opts_.skip_modules)
    if (module_matches(module, e)) int8 = false;

  DType dt = DType::F32;
  std::vector<float> w;
  std::vector<int8_t> cb;  // a checkpoint saved by bitsandbytes (load_in_8bit): CB I8 + SCB
  const int8_t* mapped_cb = nullptr;  // its CB in the checkpoint's mapping
  std::vector<float> scb;
  const bool prequantized = ckpt_->find(tname(module + ".SCB")) != nullptr;
  // In an 8-bit checkpoint (config.json has a quantization_config), a Linear saved without SCB
  // was on the skip list when it was quantized: it stays in floating point.
  if (!prequantized && c_.int8_threshold >= 0.f) int8 = false;
  // Kept fp16 weight columns (--keep-outlier-columns): from the options when quantizing here, or
  // from an 8-bit checkpoint saved with them.
  std::vector<int32_t> kept_cols;
  std::vector<uint16_t> kept_w;
  const auto kept_opt = opts_.kept_columns.find(module);
  if (allow_int8 && kept_opt != opts_.kept_columns.end()) kept_seen_.insert(module);
  if (prequantized) {
    const io::TensorInfo& t = ckpt_->get(tname(module + ".weight"), {out, in});
    const std::string where = (t.file ? *t.file : ckpt_->dir()) + ": tensor '" + t.name + "'";
    // GPT-2's Conv1D weights are stored [out, in] once quantized: transformers transposes them
    // before bitsandbytes quantizes (and llmint8 quantize does the same).
    if (t.dtype != DType::I8)
      throw Error(where + " has dtype " + std::string(dtype_name(t.dtype)) + ", expected I8 next to its SCB");
    if (const io::TensorInfo* f = ckpt_->find(tname(module + ".weight_format"))) {
      // bitsandbytes' serialized format code: 0 = plain row-major, the only layout written on save.
      if (f->nbytes != 1 || f->dtype != DType::U8 || f->data[0] != 0)
        throw Error((f->file ? *f->file : ckpt_->dir()) + ": tensor '" + f->name +
                    "': only weight_format 0 (row-major int8) is supported");
      info_.checkpoint_bytes += f->nbytes;
    }
    mapped_cb = reinterpret_cast<const int8_t*>(t.data);
    info_.parameters += t.numel();
    info_.checkpoint_bytes += t.nbytes;
    info_.weight_bytes_16bit += uint64_t(t.numel()) * 2;
    bytes_done_ += t.nbytes;
    scb = read(module + ".SCB", {out}, nullptr);
    // SCB[n] is row n's absmax: a negative scale would silently flip the row's sign.
    for (size_t r = 0; r < scb.size(); ++r)
      if (scb[r] < 0.f) {
        const io::TensorInfo& st = ckpt_->get(tname(module + ".SCB"));
        throw Error((st.file ? *st.file : ckpt_->dir()) + ": tensor '" + st.name + "': row scale " +
                    std::to_string(scb[r]) + " at element " + std::to_string(r) +
                    " is negative (SCB holds each row's absmax)");
      }
    info_.parameters -= out;  // SCB is quantization state, not a parameter
    info_.weight_bytes_16bit -= uint64_t(out) * 2;
    dt = DType::F16;  // what bitsandbytes dequantizes into
    if (int8) read_kept_columns(module, out, in, &kept_cols, &kept_w);
  } else if (s_.conv1d) {
    // Conv1D keeps [in, out]: transpose to the [out, in] layout of Y = X W^T.
    std::vector<float> t = read(module + ".weight", {in, out}, &dt);
    w.resize(t.size());
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) w[size_t(o * in + i)] = t[size_t(i * out + o)];
  } else {
    w = read(module + ".weight", {out, in}, &dt);
  }
  std::vector<float> b;
  if (bias) b = read_small(module + ".bias", out);

  const bool per_head = &L != &lm_head_own_ && s_.qkv == QkvLayout::FusedPerHead &&
                        module.size() >= s_.qkv_fused.size() &&
                        module.compare(module.size() - s_.qkv_fused.size(), s_.qkv_fused.size(), s_.qkv_fused) == 0;
  if (per_head) {
    // [heads, 3, head_dim] rows -> [3, heads, head_dim], so the output reads q | k | v.
    // Quantization is per row, so permuting rows before or after quantizing is the same.
    const int64_t H = c_.num_heads, D = c_.head_dim;
    auto permute = [&](auto& v, int64_t row) {
      if (v.empty()) return;
      std::remove_reference_t<decltype(v)> p(v.size());
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < 3; ++s)
          for (int64_t d = 0; d < D; ++d) {
            const int64_t src = (h * 3 + s) * D + d, dst = (s * H + h) * D + d;
            std::copy_n(&v[size_t(src * row)], row, &p[size_t(dst * row)]);
          }
      v.swap(p);
    };
    if (mapped_cb) cb.assign(mapped_cb, mapped_cb + size_t(out) * size_t(in));  // reordered: a copy
    mapped_cb = nullptr;
    permute(w, in);
    permute(cb, in);
    permute(scb, 1);
    permute(b, 1);
    permute(kept_w, int64_t(kept_cols.size()));
  }

  if (prequantized && int8 && mapped_cb) {
    // Zero-copy: the Linear reads CB from the mapping, which the model keeps open.
    L.set_int8_mapped(module, out, in, mapped_cb, scb, backend_.get());
    keep_mapping_ = keep_mapping_ || L.borrows_weight();
  } else if (prequantized && int8) {
    L.set_int8(module, out, in, cb, scb, backend_.get());
  } else {
    if (mapped_cb) cb.assign(mapped_cb, mapped_cb + size_t(out) * size_t(in));
    if (prequantized) {
      // Floating point requested: the dequantized weight CB * SCB / 127.
      w.resize(cb.size());
      for (int64_t o = 0; o < out; ++o)
        for (int64_t k = 0; k < in; ++k)
          w[size_t(o * in + k)] = float(cb[size_t(o * in + k)]) * scb[size_t(o)] * kInvInt8Max;
      std::vector<int8_t>().swap(cb);
    }
    if (int8) {
      // bitsandbytes quantizes the fp16-cast weight whatever the checkpoint's dtype.
      for (float& x : w) x = to_float(to_f16(x));
      if (kept_opt != opts_.kept_columns.end()) {
        // The kept columns are that same fp16 weight.
        kept_cols = kept_opt->second;
        const int64_t n = int64_t(kept_cols.size());
        for (int32_t c : kept_cols)
          if (c < 0 || c >= in)
            throw Error(module + ": kept column " + std::to_string(c) + " out of range [0, " + std::to_string(in) + ")");
        kept_w.resize(size_t(out) * size_t(n));
        for (int64_t o = 0; o < out; ++o)
          for (int64_t j = 0; j < n; ++j)
            kept_w[size_t(o * n + j)] = to_f16(w[size_t(o * in + kept_cols[size_t(j)])]).bits;
      }
    }
    L.set(module, out, in, std::move(w), int8 ? Storage::Int8 : float_storage(dt), backend_.get());
  }
  if (int8 && !kept_cols.empty()) {
    L.set_kept_columns(kept_cols, kept_w);
    info_.kept_columns += int64_t(kept_cols.size());
  }
  if (bias) L.set_bias(std::move(b));
  L.set_threads(threads_);
  if (allow_int8) L.set_observer(&opts_.activation_observer);
  (int8 ? info_.quantized_modules : info_.float_modules).push_back(module);
  info_.weight_bytes += L.bytes();
}

// <module>.kept_columns (I32 [n]) and <module>.kept_weight (F16 [out, n]) of an 8-bit checkpoint
// saved with --keep-outlier-columns (src/model/quantize.h); nothing when neither is there.
// Nothing read from the file is trusted: dtypes, shapes and indices are checked first.
void TransformerModel::read_kept_columns(const std::string& module, int64_t out, int64_t in,
                                         std::vector<int32_t>* cols, std::vector<uint16_t>* w) {
  const io::TensorInfo* c = ckpt_->find(tname(module + ".kept_columns"));
  const io::TensorInfo* kw = ckpt_->find(tname(module + ".kept_weight"));
  if (!c && !kw) return;
  const auto where = [&](const io::TensorInfo& t) {
    return (t.file ? *t.file : ckpt_->dir()) + ": tensor '" + t.name + "'";
  };
  const auto got = [](const io::TensorInfo& t) { return std::string(dtype_name(t.dtype)) + " " + t.shape_str(); };
  if (!c) throw Error(where(*kw) + " has no " + tname(module + ".kept_columns") + " beside it");
  if (!kw) throw Error(where(*c) + " has no " + tname(module + ".kept_weight") + " beside it");
  if (c->dtype != DType::I32 || c->shape.size() != 1 || c->shape[0] < 1 || c->shape[0] > in)
    throw Error(where(*c) + " is " + got(*c) + ", expected I32 [n] with 1 <= n <= " + std::to_string(in));
  const int64_t n = c->shape[0];
  cols->resize(size_t(n));
  std::memcpy(cols->data(), c->data, size_t(n) * sizeof(int32_t));
  for (int64_t j = 0; j < n; ++j) {
    const int32_t v = (*cols)[size_t(j)];
    if (v < 0 || v >= in || (j > 0 && v <= (*cols)[size_t(j - 1)]))
      throw Error(where(*c) + ": column indices must be ascending, unique and < " + std::to_string(in) +
                  " (index " + std::to_string(j) + " is " + std::to_string(v) + ")");
  }
  if (kw->dtype != DType::F16 || kw->shape != std::vector<int64_t>{out, n})
    throw Error(where(*kw) + " is " + got(*kw) + ", expected F16 [" + std::to_string(out) + ", " +
                std::to_string(n) + "]");
  w->resize(size_t(out) * size_t(n));
  std::memcpy(w->data(), kw->data, w->size() * sizeof(uint16_t));
  info_.checkpoint_bytes += c->nbytes + kw->nbytes;
  bytes_done_ += c->nbytes + kw->nbytes;
}

void TransformerModel::load_norm(Norm& n, const std::string& prefix) {
  const int64_t H = c_.hidden_size;
  n.w = read_small(prefix + ".weight", H);
  if (s_.norm == NormKind::LayerNorm) n.b = read_small(prefix + ".bias", H);
  info_.weight_bytes += (n.w.size() + n.b.size()) * 4;
}

TransformerModel::TransformerModel(const std::string& dir, const LoadOptions& opts)
    : ConfiguredModel(load_config(dir)), opts_(opts) {
  reset_peak_rss();
  if (opts_.device != "cpu")
    throw Error("device '" + opts_.device + "': the model runs on the CPU only (use device 'cpu')");
  if (opts_.threshold_from_checkpoint && c_.int8_threshold >= 0.f) opts_.threshold = c_.int8_threshold;
  if (!(opts_.threshold >= 0.f) || !std::isfinite(opts_.threshold))
    throw Error("threshold must be a finite number >= 0, got " + std::to_string(opts_.threshold));
  if (opts_.threads < 0) throw Error("threads must be >= 0, got " + std::to_string(opts_.threads));
  if (opts_.precision != Precision::Int8) opts_.kept_columns.clear();  // only int8 weights keep columns
  if (!opts_.kept_columns.empty() && c_.int8_threshold >= 0.f)
    throw Error(dir + ": an 8-bit checkpoint: kept columns come from the 16-bit weights (quantize the "
                "original model with --keep-outlier-columns)");
  threads_ = opts_.threads > 0 ? opts_.threads : omp_get_max_threads();
  // OpenMP threads call OpenBLAS on their own blocks (src/model/linear.h): OpenBLAS's own
  // threads would only compete with them.
  openblas_set_num_threads(1);
  backend_ = make_cpu_backend(threads_);
  act_ = parse_act(c_.activation);

  ckpt_ = io::Checkpoint::open(dir);
  for (const auto& n : ckpt_->names()) bytes_total_ += ckpt_->find(n)->nbytes;
  info_.largest_tensor_bytes = ckpt_->largest_tensor_bytes();
  strip_prefix_ = !ckpt_->find(s_.embed) && !s_.base_prefix.empty() &&
                  ckpt_->find(s_.embed.substr(s_.base_prefix.size()));

  const int64_t H = c_.hidden_size, V = c_.vocab_size, D = c_.head_dim;
  const int64_t qd = c_.num_heads * D, kvd = c_.num_kv_heads * D, I = c_.intermediate_size;

  // Embeddings (never quantized: a lookup table, and the tied output projection).
  {
    DType dt;
    std::vector<float> e = read(s_.embed, {V, H}, &dt);
    embed_.set(tname(s_.embed), V, H, std::move(e), float_storage(dt), nullptr);
    embed_.set_threads(threads_);
    info_.weight_bytes += embed_.bytes();
  }
  if (!s_.pos_embed.empty()) {
    DType dt;
    const int64_t P = c_.max_positions + s_.pos_offset;
    std::vector<float> e = read(s_.pos_embed, {P, H}, &dt);
    pos_embed_.set(tname(s_.pos_embed), P, H, std::move(e), float_storage(dt), nullptr);
    info_.weight_bytes += pos_embed_.bytes();
  }
  if (!s_.embed_norm.empty()) load_norm(embed_norm_, s_.embed_norm);

  layers_.resize(size_t(c_.num_layers));
  for (int64_t l = 0; l < c_.num_layers; ++l) {
    Layer& L = layers_[size_t(l)];
    const std::string p = layer_name(s_.layer_prefix, l);
    load_norm(L.n1, p + s_.norm1);
    if (s_.qkv == QkvLayout::Separate) {
      load_linear(L.q, p + s_.q, qd, H, c_.qkv_bias, true);
      load_linear(L.k, p + s_.k, kvd, H, c_.qkv_bias, true);
      load_linear(L.v, p + s_.v, kvd, H, c_.qkv_bias, true);
    } else {
      load_linear(L.qkv, p + s_.qkv_fused, qd + 2 * kvd, H, c_.qkv_bias, true);
    }
    load_linear(L.o, p + s_.o, H, qd, c_.o_bias, true);
    load_norm(L.n2, p + s_.norm2);
    if (s_.mlp == MlpKind::Gated) load_linear(L.gate, p + s_.gate, I, H, c_.mlp_bias, true);
    load_linear(L.up, p + s_.up, I, H, c_.mlp_bias, true);
    load_linear(L.down, p + s_.down, H, I, c_.mlp_bias, true);
  }
  if (!s_.final_norm.empty()) load_norm(final_norm_, s_.final_norm);

  if (c_.tie_word_embeddings) {
    lm_head_ = &embed_;
    info_.float_modules.push_back(s_.lm_head);
  } else {
    // The output projection is never quantized (LLM.int8() keeps it in 16-bit).
    const bool conv = s_.conv1d;
    s_.conv1d = false;  // GPT-2's lm_head is an nn.Linear
    load_linear(lm_head_own_, s_.lm_head, V, H, false, false);
    s_.conv1d = conv;
    lm_head_ = &lm_head_own_;
  }

  if (s_.pos == PosKind::RoPE) inv_freq_ = rope_inv_freq(c_);
  if (s_.pos == PosKind::ALiBi) slopes_ = alibi_slopes(c_.num_heads);
  for (const auto& [name, cols] : opts_.kept_columns)
    if (!kept_seen_.count(name))
      throw Error("kept columns given for '" + name + "', which is no Linear that LLM.int8() quantizes in " + dir);

  info_.architecture = c_.architecture;
  info_.model_type = c_.model_type;
  info_.precision = std::string(precision_name(opts_.precision));
  info_.threshold = opts_.precision == Precision::Int8 ? opts_.threshold : 0.f;
  info_.layers = c_.num_layers;
  info_.hidden_size = H;
  info_.heads = c_.num_heads;
  info_.kv_heads = c_.num_kv_heads;
  info_.vocab_size = V;
  if (opts_.progress) opts_.progress(bytes_total_, bytes_total_);
  // Unmaps the files, unless int8 weights of a pre-quantized checkpoint are read in place.
  if (!keep_mapping_) ckpt_.reset();
  info_.peak_rss_bytes = peak_rss_bytes();
}

// ---------------------------------------------------------------------------------------------
// Forward

TransformerSession::TransformerSession(TransformerModel& m, int64_t capacity)
    : m_(m), capacity_(capacity), k_(size_t(m.info().layers)), v_(size_t(m.info().layers)) {}

void TransformerSession::forward(std::span<const int32_t> tokens, std::vector<float>* logits,
                                 bool all_logits) {
  m_.run(*this, tokens, logits, all_logits);
}

void TransformerModel::attention(int64_t l, TransformerSession& s, const float* a, int64_t M,
                                 float* out) {
  Layer& L = layers_[size_t(l)];
  const int64_t D = c_.head_dim, NH = c_.num_heads, NKV = c_.num_kv_heads;
  const int64_t qd = NH * D, kvd = NKV * D, p0 = s.pos_, T = p0 + M;
  const float th = opts_.threshold;

  std::vector<float>& Kc = s.k_[size_t(l)];
  std::vector<float>& Vc = s.v_[size_t(l)];
  if (Kc.size() < size_t(T * kvd)) {
    // Grow geometrically up to the session's capacity.
    const size_t want = size_t(std::min<int64_t>(s.capacity_, std::max<int64_t>(T, 2 * p0))) * size_t(kvd);
    Kc.resize(std::max(want, size_t(T * kvd)));
    Vc.resize(Kc.size());
  }
  std::vector<float> q(size_t(M * qd));
  if (s_.qkv == QkvLayout::Separate) {
    L.q.forward(a, M, q.data(), th);
    std::vector<float> kv(size_t(M * kvd));
    L.k.forward(a, M, kv.data(), th);
    std::memcpy(&Kc[size_t(p0 * kvd)], kv.data(), kv.size() * sizeof(float));
    L.v.forward(a, M, kv.data(), th);
    std::memcpy(&Vc[size_t(p0 * kvd)], kv.data(), kv.size() * sizeof(float));
  } else {
    const int64_t W = qd + 2 * kvd;
    std::vector<float> f(size_t(M * W));
    L.qkv.forward(a, M, f.data(), th);
    for (int64_t m = 0; m < M; ++m) {
      std::memcpy(&q[size_t(m * qd)], &f[size_t(m * W)], size_t(qd) * sizeof(float));
      std::memcpy(&Kc[size_t((p0 + m) * kvd)], &f[size_t(m * W + qd)], size_t(kvd) * sizeof(float));
      std::memcpy(&Vc[size_t((p0 + m) * kvd)], &f[size_t(m * W + qd + kvd)], size_t(kvd) * sizeof(float));
    }
  }

  if (s_.pos == PosKind::RoPE) {
    // Rotate-half RoPE on the first rotary_dim dims of every head:
    //   y[i] = x[i] cos - x[i+h] sin,  y[i+h] = x[i+h] cos + x[i] sin,  h = rotary_dim / 2,
    // angle = position * inv_freq[i] in float32 as transformers computes it.
    const int64_t half = int64_t(inv_freq_.size());
    std::vector<float> cs(size_t(M * half)), sn(size_t(M * half));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < half; ++i) {
        const float ang = float(p0 + m) * inv_freq_[size_t(i)];
        cs[size_t(m * half + i)] = float(std::cos(double(ang)));
        sn[size_t(m * half + i)] = float(std::sin(double(ang)));
      }
    auto rotate = [&](float* x, int64_t m) {
      const float* c = &cs[size_t(m * half)];
      const float* sv = &sn[size_t(m * half)];
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = x[i], x1 = x[i + half];
        x[i] = x0 * c[i] - x1 * sv[i];
        x[i + half] = x1 * c[i] + x0 * sv[i];
      }
    };
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t h = 0; h < NH; ++h) rotate(&q[size_t(m * qd + h * D)], m);
      for (int64_t h = 0; h < NKV; ++h) rotate(&Kc[size_t((p0 + m) * kvd + h * D)], m);
    }
  }

  float scale = 1.0f / std::sqrt(float(D));
  if (c_.family == Family::GPT2) {
    if (!c_.scale_attn_weights) scale = 1.0f;
    if (c_.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
  }
  const int64_t group = NH / NKV, window = c_.sliding_window;
  std::vector<float> ctx(size_t(M * qd));
  const bool alibi = s_.pos == PosKind::ALiBi;
  // Scores of query position i over keys j0..i (raw dot products in sc[j]) -> probabilities:
  // softmax(dot * scale [+ slope * j for ALiBi]) in float32, the sum accumulated in double.
  auto softmax_row = [&](float* sc, int64_t j0, int64_t i, int64_t h) {
    const float slope = alibi ? slopes_[size_t(h)] : 0.f;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = j0; j <= i; ++j) {
      float v = sc[j] * scale;
      if (alibi) v += slope * float(j);
      sc[j] = v;
      mx = std::max(mx, v);
    }
    double sum = 0;
    for (int64_t j = j0; j <= i; ++j) {
      const float e = std::exp(sc[j] - mx);
      sc[j] = e;
      sum += e;
    }
    const float inv = float(1.0 / sum);
    for (int64_t j = j0; j <= i; ++j) sc[j] *= inv;
  };
  auto first_key = [&](int64_t i) { return window > 0 ? std::max<int64_t>(0, i - window + 1) : 0; };

  if (M >= 8) {
    // Prefill: per head, S = Q K^T and ctx = P V through sgemm (heads spread over the threads);
    // masked entries get probability 0.
#pragma omp parallel num_threads(threads_) if (NH > 1 && NH * M * T * D > (int64_t(1) << 22))
    {
      std::vector<float> S(size_t(M * T));
#pragma omp for schedule(static)
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t kvh = h / group;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(T), int(D), 1.0f,
                    &q[size_t(h * D)], int(qd), &Kc[size_t(kvh * D)], int(kvd), 0.0f, S.data(), int(T));
        for (int64_t m = 0; m < M; ++m) {
          float* row = &S[size_t(m * T)];
          const int64_t i = p0 + m, j0 = first_key(i);
          softmax_row(row, j0, i, h);
          std::fill(row, row + j0, 0.f);
          std::fill(row + i + 1, row + T, 0.f);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(D), int(T), 1.0f, S.data(),
                    int(T), &Vc[size_t(kvh * D)], int(kvd), 0.0f, &ctx[size_t(h * D)], int(qd));
      }
    }
  } else {
    // Decode: a few queries over the cache, one (head, query) pair per task.
#pragma omp parallel num_threads(threads_) if (NH * M * T > 16384)
    {
      std::vector<float> sc(static_cast<size_t>(T));
#pragma omp for collapse(2) schedule(static)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t m = 0; m < M; ++m) {
          const int64_t i = p0 + m, kvh = h / group, j0 = first_key(i);
          const float* qv = &q[size_t(m * qd + h * D)];
          for (int64_t j = j0; j <= i; ++j) {
            const float* kv = &Kc[size_t(j * kvd + kvh * D)];
            float dot = 0.f;
            for (int64_t d = 0; d < D; ++d) dot += qv[d] * kv[d];
            sc[size_t(j)] = dot;
          }
          softmax_row(sc.data(), j0, i, h);
          float* o = &ctx[size_t(m * qd + h * D)];
          std::fill(o, o + D, 0.f);
          for (int64_t j = j0; j <= i; ++j) {
            const float pj = sc[size_t(j)];
            const float* vv = &Vc[size_t(j * kvd + kvh * D)];
            for (int64_t d = 0; d < D; ++d) o[d] += pj * vv[d];
          }
        }
    }
  }
  L.o.forward(ctx.data(), M, out, th);
}

void TransformerModel::mlp(int64_t l, const float* a, int64_t M, float* out) {
  Layer& L = layers_[size_t(l)];
  const int64_t I = c_.intermediate_size;
  const float th = opts_.threshold;
  std::vector<float> u(size_t(M * I));
  L.up.forward(a, M, u.data(), th);
  if (s_.mlp == MlpKind::Gated) {
    std::vector<float> g(size_t(M * I));
    L.gate.forward(a, M, g.data(), th);
    apply_act(act_, g.data(), M * I);
    for (size_t i = 0; i < u.size(); ++i) u[i] = g[i] * u[i];
  } else {
    apply_act(act_, u.data(), M * I);
  }
  L.down.forward(u.data(), M, out, th);
}

void TransformerModel::run(TransformerSession& s, std::span<const int32_t> tokens,
                           std::vector<float>* logits, bool all_logits) {
  const int64_t M = int64_t(tokens.size());
  if (M == 0) throw Error("forward: no tokens given");
  if (s.pos_ + M > s.capacity_)
    throw Error("forward: " + std::to_string(s.pos_ + M) + " tokens exceed the session's capacity of " +
                std::to_string(s.capacity_));
  const int64_t H = c_.hidden_size, V = c_.vocab_size;
  for (int64_t m = 0; m < M; ++m)
    if (tokens[size_t(m)] < 0 || tokens[size_t(m)] >= V)
      throw Error("forward: token id " + std::to_string(tokens[size_t(m)]) + " out of range [0, " +
                  std::to_string(V) + ")");

  std::vector<float> x(size_t(M * H)), a(size_t(M * H)), b(size_t(M * H)), t(size_t(M * H));
  for (int64_t m = 0; m < M; ++m) embed_.row(tokens[size_t(m)], &x[size_t(m * H)]);
  if (s_.pos == PosKind::Learned) {
    std::vector<float> pe(static_cast<size_t>(H));
    for (int64_t m = 0; m < M; ++m) {
      pos_embed_.row(s.pos_ + m + s_.pos_offset, pe.data());
      for (int64_t i = 0; i < H; ++i) x[size_t(m * H + i)] += pe[size_t(i)];
    }
  }
  if (!s_.embed_norm.empty()) {
    apply_norm(s_.norm, embed_norm_, c_.norm_eps, x.data(), a.data(), M, H);
    x.swap(a);
  }

  const size_t n = x.size();
  for (int64_t l = 0; l < c_.num_layers; ++l) {
    const Layer& L = layers_[size_t(l)];
    switch (s_.block) {
      case BlockKind::PreNorm: {
        apply_norm(s_.norm, L.n1, c_.norm_eps, x.data(), a.data(), M, H);
        attention(l, s, a.data(), M, t.data());
        const float* res = s_.residual_post_layernorm ? a.data() : x.data();
        for (size_t i = 0; i < n; ++i) x[i] = res[i] + t[i];
        apply_norm(s_.norm, L.n2, c_.norm_eps, x.data(), a.data(), M, H);
        mlp(l, a.data(), M, t.data());
        res = s_.residual_post_layernorm ? a.data() : x.data();
        for (size_t i = 0; i < n; ++i) x[i] = res[i] + t[i];
        break;
      }
      case BlockKind::Parallel: {
        apply_norm(s_.norm, L.n1, c_.norm_eps, x.data(), a.data(), M, H);
        attention(l, s, a.data(), M, t.data());
        apply_norm(s_.norm, L.n2, c_.norm_eps, x.data(), a.data(), M, H);
        mlp(l, a.data(), M, b.data());
        for (size_t i = 0; i < n; ++i) x[i] = (b[i] + t[i]) + x[i];
        break;
      }
      case BlockKind::PostNorm: {
        attention(l, s, x.data(), M, t.data());
        for (size_t i = 0; i < n; ++i) t[i] += x[i];
        apply_norm(s_.norm, L.n1, c_.norm_eps, t.data(), x.data(), M, H);
        mlp(l, x.data(), M, t.data());
        for (size_t i = 0; i < n; ++i) t[i] += x[i];
        apply_norm(s_.norm, L.n2, c_.norm_eps, t.data(), x.data(), M, H);
        break;
      }
    }
  }
  s.pos_ += M;

  if (!logits) return;
  const int64_t rows = all_logits ? M : 1;
  const float* last = &x[size_t((M - rows) * H)];
  if (!s_.final_norm.empty()) {
    apply_norm(s_.norm, final_norm_, c_.norm_eps, last, a.data(), rows, H);
    last = a.data();
  }
  logits->resize(size_t(rows * V));
  lm_head_->forward(last, rows, logits->data(), 0.f);
}

TransformerView TransformerModel::view() const {
  TransformerView v;
  v.config = &c_;
  v.spec = &s_;
  v.threshold = opts_.threshold;
  v.embed = &embed_;
  v.pos_embed = &pos_embed_;
  v.lm_head = lm_head_;
  v.embed_norm = {&embed_norm_.w, &embed_norm_.b};
  v.final_norm = {&final_norm_.w, &final_norm_.b};
  for (const Layer& L : layers_)
    v.layers.push_back(LayerView{{&L.n1.w, &L.n1.b}, {&L.n2.w, &L.n2.b}, &L.q, &L.k, &L.v, &L.qkv,
                                 &L.o, &L.gate, &L.up, &L.down});
  v.inv_freq = &inv_freq_;
  v.slopes = &slopes_;
  return v;
}

}  // namespace

TransformerView view_transformer(const Model& m) {
  const auto* t = dynamic_cast<const TransformerModel*>(&m);
  if (!t) throw Error("view_transformer: not a CPU transformer model");
  return t->view();
}

const Int8Weight* find_int8_weight(const Model& m, const std::string& module) {
  const auto* t = dynamic_cast<const TransformerModel*>(&m);
  const Linear* L = t ? t->find_linear(module) : nullptr;
  return L && L->storage() == Storage::Int8 ? &L->int8() : nullptr;
}

std::unique_ptr<Model> load_transformer(const std::string& dir, const LoadOptions& opts) {
  return std::make_unique<TransformerModel>(dir, opts);
}

}  // namespace llmint8::model
