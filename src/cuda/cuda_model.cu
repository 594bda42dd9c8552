// The GPU transformer: see src/cuda/cuda_model.h. One block implementation for every family,
// wired by the ArchSpec exactly as the CPU model (src/model/transformer.cpp) wires it.
//
// Weights: q/k/v are uploaded as ONE [q | k | v] Linear and gate/up as ONE [gate | up] Linear
// (row concatenation; LLM.int8()'s weight quantization is per row and its outlier columns depend
// on the input only, so the fused product equals the separate ones), which halves the launches.
// Decoding one token (M = 1) replays a CUDA graph of the whole forward pass: the token and the
// position are read from device memory, so one capture serves every step until the KV cache or
// the scratch buffers are reallocated.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_model.h"
#include "cuda/model_kernels.cuh"
#include "llmint8/error.h"
#include "model/arch.h"
#include "model/linear.h"
#include "model/transformer.h"

namespace llmint8::cuda {
namespace {

using model::ArchSpec;
using model::BlockKind;
using model::Family;
using model::ModelConfig;
using model::NormKind;
using model::PosKind;
using model::QkvLayout;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(std::string("CUDA model: ") + what + ": " + cudaGetErrorString(e));
  }
}
void check_launch(const char* what) { check(cudaGetLastError(), what); }
void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("CUDA model: ") + what + " failed with cuBLAS status " + std::to_string(int(s)));
}

std::string gib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
  return buf;
}

constexpr size_t kDecAttnSmemMax = 112 * 1024;  // decode_attention_kernel's shared memory (at most ~98 KB)

int grid_for(int64_t n, int threads = 256) {
  return int(std::clamp<int64_t>((n + threads - 1) / threads, 1, 65535));
}

// A Linear in device memory: 16-bit dense [out, in] of the io type, or LLM.int8() CB/SCB.
struct GLinear {
  int64_t out = 0, in = 0;
  bool int8 = false;
  void* w = nullptr;      // io-type weight or CB
  float* scb = nullptr;   // int8 only
  float* bias = nullptr;  // float32 [out] or null
  // Set when a fused projection mixes int8 and 16-bit parts (llm_int8_skip_modules naming one of
  // q/k/v or gate/up): each part runs on its own and lands in its columns of Y.
  std::vector<GLinear> parts;
  Int8Weight w8() const { return Int8Weight{out, in, static_cast<const int8_t*>(w), scb}; }
  bool present() const { return w || !parts.empty(); }
};
struct GNorm {
  float* w = nullptr;
  float* b = nullptr;
};
struct GLayer {
  GNorm n1, n2;
  GLinear qkv, o, gate_up, up, down;  // gate_up (gated MLP) or up (plain MLP)
};

class CudaModel;

// The state of nseq sequences (a Session is nseq = 1, a BatchSession nseq = B). A forward pass
// runs either one sequence's tokens (a prompt or a step: the Session API, BatchSession::forward)
// or one token of every sequence (BatchSession::step). The kernels see this as nq query groups of
// Mq consecutive tokens each: group g reads and appends to sequence g's cache at its own position.
class CudaSession final : public Session, public BatchSession {
 public:
  CudaSession(CudaModel& m, int64_t capacity, int64_t nseq = 1);
  ~CudaSession() override;
  // Session (sequence 0)
  void forward(std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits) override {
    run(0, tokens, logits, all_logits);
  }
  void reset() override { std::fill(pos_.begin(), pos_.end(), 0); }
  int64_t position() const override { return pos_[0]; }
  // BatchSession
  int64_t batch_size() const override { return nseq_; }
  void forward(int64_t b, std::span<const int32_t> tokens, std::vector<float>* logits) override {
    if (b < 0 || b >= nseq_)
      throw Error("batch session: sequence " + std::to_string(b) + " out of range [0, " + std::to_string(nseq_) + ")");
    run(b, tokens, logits, false);
  }
  void step(std::span<const int32_t> tokens, std::vector<float>* logits) override {
    if (int64_t(tokens.size()) != nseq_)
      throw Error("batch step: " + std::to_string(tokens.size()) + " tokens given for " + std::to_string(nseq_) +
                  " sequences");
    run(-1, tokens, logits, true);
  }
  int64_t position(int64_t b) const override { return pos_.at(size_t(b)); }

 private:
  friend class CudaModel;
  // seq >= 0: tokens of sequence seq; seq = -1: one token of every sequence.
  void run(int64_t seq, std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits);
  template <class T> void enqueue(int64_t M, int64_t rows);
  template <class T> void attention(int64_t l, const T* in, int64_t M, T* out);
  template <class T> void mlp(int64_t l, const T* in, int64_t M, T* out);
  template <class T> void prefill_attention(const T* qkv, const T* Kc, const T* Vc, int64_t M, float scale);
  void ensure_cache(int64_t tokens);
  void ensure_scratch(int64_t M, int64_t rows);
  void* dalloc(size_t bytes, const char* what);

  // K or V cache of layer l, at the first sequence of this pass (seq_).
  template <class T> T* cache(void* base, int64_t l) const;

  CudaModel& m_;
  int64_t capacity_;
  int64_t nseq_;
  std::vector<int64_t> pos_;  // per sequence
  // The pass being enqueued: its first sequence, query groups and tokens per group.
  int64_t seq_ = 0, nq_ = 1, Mq_ = 1;
  // KV cache: [layers][nseq_][cache_cap_][kvd] of the io type, one allocation each for K and V.
  void* K_ = nullptr;
  void* V_ = nullptr;
  int64_t cache_cap_ = 0;
  // Scratch for up to scr_M_ tokens.
  int64_t scr_M_ = 0, scr_rows_ = 0;
  float* x_ = nullptr;  // residual [M, H]
  float* y_ = nullptr;  // PostNorm temporary [M, H]
  void *a_ = nullptr, *a2_ = nullptr, *qkv_ = nullptr, *ctx_ = nullptr, *t_ = nullptr, *b_ = nullptr,
       *gu_ = nullptr, *u_ = nullptr;
  float* logits_ = nullptr;
  float *part_acc_ = nullptr, *part_ml_ = nullptr;
  unsigned* attn_tickets_ = nullptr;  // [nseq_ * NKV]: decode_attention_kernel's split counters
  int32_t* d_tok_ = nullptr;
  int* d_pos_ = nullptr;
  // Prefill attention scores [NH, Mc, T] float32 and probabilities (16-bit); grow-only.
  void* scores_ = nullptr;
  size_t scores_bytes_ = 0;
  int32_t* h_tok_ = nullptr;  // pinned [scr_M_]
  int* h_pos_ = nullptr;      // pinned [nseq_]: start position of each query group
  int generation_ = 0;        // bumped by every reallocation: invalidates the graph
  // One-token steps (Mq = 1) replay a graph captured for this (first sequence, groups) pair.
  cudaGraphExec_t graph_ = nullptr;
  int graph_generation_ = -1;
  int64_t graph_seq_ = -2, graph_nq_ = 0;
};

class CudaModel final : public model::ConfiguredModel {
 public:
  // Upload of a CPU-prepared model.
  CudaModel(const std::string& dir, const LoadOptions& opts);
  // Synthetic weights (benchmarks).
  CudaModel(const ModelConfig& c, const LoadOptions& opts, uint64_t seed, float std);
  ~CudaModel() override;

  std::unique_ptr<Session> new_session(int64_t max_tokens) override {
    return std::make_unique<CudaSession>(*this, capacity_for(max_tokens));
  }
  std::unique_ptr<BatchSession> new_batch_session(int64_t batch, int64_t max_tokens) override {
    if (batch <= 0) throw Error("new_batch_session: batch must be >= 1, got " + std::to_string(batch));
    return std::make_unique<CudaSession>(*this, capacity_for(max_tokens), batch);
  }
  uint64_t resident() const { return resident_; }

 private:
  friend class CudaSession;
  void init_device(const LoadOptions& opts);
  void check_fits(uint64_t bytes) const;
  void* walloc(size_t bytes);  // weight memory (counted in resident_)
  void* halloc(size_t bytes);  // pinned host weight memory the GPU reads (counted in host_bytes_)
  float* upload_f32(const std::vector<float>& v);
  GNorm upload_norm(const model::NormView& n);
  GLinear upload_linear(const std::vector<const model::Linear*>& parts, bool allow_int8, const char* what,
                        bool host = false);
  GLinear synth_linear(int64_t out, int64_t in, bool int8, uint64_t seed, float a, bool host = false);
  void finish_info();
  template <class T> void linear(const GLinear& L, const T* X, int64_t M, T* Y);
  template <class T> void lm_head(const T* X, int64_t rows, float* logits);
  // kern<<<grid, block, smem, st_>>>(args...), as a programmatic dependent of the kernel before it
  // when pdl_ (cuda/pdl.cuh: the kernel waits for that one with pdl_wait_primary in every block).
  template <class... KArgs, class... Args>
  void launch(const char* what, void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem, Args... args) const {
    check(launch_kernel(pdl_, st_, grid, block, smem, kern, args...), what);
  }

  Precision prec_ = Precision::Int8;
  DType io_ = DType::F16;
  float threshold_ = 0.f;
  int act_ = 0;
  int device_ = 0;
  std::unique_ptr<Backend> be_;
  cudaStream_t st_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* blas_ws_ = nullptr;
  std::vector<void*> allocs_;
  uint64_t resident_ = 0;
  std::vector<void*> host_allocs_;
  uint64_t host_bytes_ = 0;
  void* part_scratch_ = nullptr;  // output of one part of a mixed projection (GLinear::parts)
  size_t part_scratch_bytes_ = 0;
  int sm_count_ = 0;
  // The model's kernels launched as programmatic dependents (sm_90+; LLMINT8_CUDA_NO_PDL=1 turns
  // PDL off everywhere, LLMINT8_CUDA_MODEL_PDL=0 only here, for A/B measurements).
  bool pdl_ = false;
  // Decode steps (one query per sequence) run decode_attention_kernel; LLMINT8_CUDA_DECODE_ATTENTION=0
  // sends them to attention_kernel + attn_combine_kernel instead (A/B measurements).
  bool use_decode_attention_ = true;
  int dec_attn_splits_ = 0;  // > 0: its key splits (LLMINT8_CUDA_DEC_ATTN_SPLITS; tests, tuning)
  // The gated activation fused into the int8 row GEMV of decode steps (LLMINT8_CUDA_FUSED_ACT=0:
  // gate_up then act_kernel, for A/B measurements and the equality test).
  bool fused_act_ = true;

  GLinear embed_, pos_embed_, lm_head_;  // lm_head_.w == embed_.w when tied
  GNorm embed_norm_, final_norm_;
  std::vector<GLayer> layers_;
  float* inv_freq_ = nullptr;
  float* slopes_ = nullptr;
  int rot_half_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Construction

int parse_device(const std::string& d) {
  if (d == "cuda") return 0;
  if (d.rfind("cuda:", 0) == 0) {
    const std::string n = d.substr(5);
    if (!n.empty() && n.size() < 4 && std::all_of(n.begin(), n.end(), ::isdigit)) return std::stoi(n);
  }
  throw Error("device '" + d + "': expected 'cpu', 'cuda' or 'cuda:N'");
}

// The kernels' activation codes (cuda/act.cuh) are model::Act's values.
static_assert(int(ActK::SiLU) == int(model::Act::SiLU) && int(ActK::GELU) == int(model::Act::GELU) &&
              int(ActK::GELUTanh) == int(model::Act::GELUTanh) && int(ActK::ReLU) == int(model::Act::ReLU) &&
              int(ActK::QuickGELU) == int(model::Act::QuickGELU));
int act_code(const std::string& a) { return int(model::parse_act(a)); }

void CudaModel::init_device(const LoadOptions& opts) {
  device_ = parse_device(opts.device);
  prec_ = opts.precision;
  if (prec_ == Precision::F32)
    throw Error("precision fp32 is not supported on cuda (use int8, fp16 or bf16)");
  io_ = prec_ == Precision::BF16 ? DType::BF16 : DType::F16;
  be_ = make_cuda_backend(device_);
  if (!be_) throw Error("device '" + opts.device + "': no CUDA GPU found");
  st_ = static_cast<cudaStream_t>(stream_of(*be_));
  check(cudaSetDevice(device_), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
  sm_count_ = prop.multiProcessorCount;
  pdl_ = prop.major >= 9;
  if (const char* e = std::getenv("LLMINT8_CUDA_NO_PDL")) pdl_ = pdl_ && std::atoi(e) == 0;
  if (const char* e = std::getenv("LLMINT8_CUDA_MODEL_PDL")) pdl_ = pdl_ && std::atoi(e) != 0;
  check_blas(cublasCreate(&blas_), "cublasCreate");
  check_blas(cublasSetStream(blas_, st_), "cublasSetStream");
  // A fixed workspace: cuBLAS then never allocates, which graph capture needs.
  check(cudaMalloc(&blas_ws_, 32u << 20), "cudaMalloc(cuBLAS workspace)");
  check_blas(cublasSetWorkspace(blas_, blas_ws_, 32u << 20), "cublasSetWorkspace");
  check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  for (auto f : {(const void*)mk::attention_kernel<__half, false>, (const void*)mk::attention_kernel<__nv_bfloat16, false>,
                 (const void*)mk::attention_kernel<__half, true>, (const void*)mk::attention_kernel<__nv_bfloat16, true>})
    check(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
          "cudaFuncSetAttribute(attention)");
  for (auto f : {(const void*)mk::decode_attention_kernel<__half, 2>, (const void*)mk::decode_attention_kernel<__half, 4>,
                 (const void*)mk::decode_attention_kernel<__half, 8>, (const void*)mk::decode_attention_kernel<__nv_bfloat16, 2>,
                 (const void*)mk::decode_attention_kernel<__nv_bfloat16, 4>,
                 (const void*)mk::decode_attention_kernel<__nv_bfloat16, 8>})
    check(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kDecAttnSmemMax)),
          "cudaFuncSetAttribute(decode attention)");
  if (const char* e = std::getenv("LLMINT8_CUDA_DECODE_ATTENTION")) use_decode_attention_ = std::atoi(e) != 0;
  if (const char* e = std::getenv("LLMINT8_CUDA_DEC_ATTN_SPLITS")) dec_attn_splits_ = std::atoi(e);
  if (const char* e = std::getenv("LLMINT8_CUDA_FUSED_ACT")) fused_act_ = std::atoi(e) != 0;
}

// Throws when `bytes` of weights (plus a margin for the cache and scratch) exceed free memory.
void CudaModel::check_fits(uint64_t bytes) const {
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  const uint64_t margin = 512ull << 20;
  if (bytes + margin > free_b)
    throw Error("model '" + c_.dir + "' needs " + gib(bytes) + " of GPU memory for its weights (+" +
                gib(margin) + " working memory), but only " + gib(free_b) + " of " + gib(total_b) +
                " are free on " + be_->name());
}

// Pinned, mapped host memory: kernels read it through its device address (UVA) over PCIe.
void* CudaModel::halloc(size_t bytes) {
  void* p = nullptr;
  check(cudaHostAlloc(&p, std::max<size_t>(bytes, 16), cudaHostAllocMapped | cudaHostAllocWriteCombined),
        "cudaHostAlloc(embeddings)");
  host_allocs_.push_back(p);
  host_bytes_ += bytes;
  void* d = nullptr;
  check(cudaHostGetDevicePointer(&d, p, 0), "cudaHostGetDevicePointer(embeddings)");
  return d;
}

void* CudaModel::walloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, std::max<size_t>(bytes, 16)), "cudaMalloc(weights)");
  allocs_.push_back(p);
  resident_ += bytes;
  return p;
}

float* CudaModel::upload_f32(const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  auto* p = static_cast<float*>(walloc(v.size() * 4));
  check(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy(weights)");
  return p;
}

GNorm CudaModel::upload_norm(const model::NormView& n) {
  GNorm g;
  if (n.w && !n.w->empty()) g.w = upload_f32(*n.w);
  if (n.b && !n.b->empty()) g.b = upload_f32(*n.b);
  return g;
}

// Uploads the row concatenation of `parts` (same in_features): int8 parts as CB/SCB, the rest
// widened row by row (Linear::row) and rounded to the io type.
GLinear CudaModel::upload_linear(const std::vector<const model::Linear*>& parts, bool allow_int8,
                                 const char* what, bool host) {
  GLinear g;
  if (parts.empty() || parts[0]->name().empty()) return g;
  g.in = parts[0]->in_features();
  const bool int8 = allow_int8 && parts[0]->storage() == model::Storage::Int8;
  bool mixed = false;
  for (const auto* p : parts) mixed = mixed || (allow_int8 && (p->storage() == model::Storage::Int8) != int8);
  if (mixed) {  // some parts skipped (16-bit), the others int8: kept apart, run one by one
    for (const auto* p : parts) {
      if (p->in_features() != g.in) throw Error(p->name() + ": internal error: in_features mismatch");
      g.parts.push_back(upload_linear({p}, allow_int8, what));
      g.out += p->out_features();
    }
    return g;
  }
  bool any_bias = false;
  for (const auto* p : parts) {
    if (p->in_features() != g.in) throw Error(p->name() + ": internal error: in_features mismatch");
    g.out += p->out_features();
    any_bias = any_bias || p->has_bias();
  }
  g.int8 = int8;
  const size_t K = size_t(g.in);
  if (int8) {
    g.w = walloc(size_t(g.out) * K);
    g.scb = static_cast<float*>(walloc(size_t(g.out) * 4));
    int64_t r0 = 0;
    for (const auto* p : parts) {
      const Int8Weight& w = p->int8();
      const size_t n = size_t(p->out_features());
      check(cudaMemcpy(static_cast<int8_t*>(g.w) + size_t(r0) * K, w.CB, n * K, cudaMemcpyHostToDevice), "cudaMemcpy(CB)");
      check(cudaMemcpy(g.scb + r0, w.SCB, n * 4, cudaMemcpyHostToDevice), "cudaMemcpy(SCB)");
      r0 += p->out_features();
    }
  } else {
    g.w = host ? halloc(size_t(g.out) * K * 2) : walloc(size_t(g.out) * K * 2);
    std::vector<float> row(K);
    std::vector<uint16_t> buf;
    int64_t r0 = 0;
    for (const auto* p : parts) {
      const int64_t n = p->out_features();
      const int64_t chunk = std::max<int64_t>(1, int64_t((16u << 20) / (K * 2)));
      for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int64_t cn = std::min(chunk, n - c0);
        buf.resize(size_t(cn) * K);
        for (int64_t r = 0; r < cn; ++r) {
          p->row(c0 + r, row.data());
          for (size_t k = 0; k < K; ++k)
            buf[size_t(r) * K + k] = io_ == DType::BF16 ? to_bf16(row[k]).bits : to_f16(row[k]).bits;
        }
        check(cudaMemcpy(static_cast<uint16_t*>(g.w) + size_t(r0 + c0) * K, buf.data(), buf.size() * 2,
                         cudaMemcpyHostToDevice),
              "cudaMemcpy(weights)");
      }
      r0 += n;
    }
  }
  if (any_bias) {
    std::vector<float> b;
    for (const auto* p : parts) {
      if (p->has_bias()) b.insert(b.end(), p->bias().begin(), p->bias().end());
      else b.insert(b.end(), size_t(p->out_features()), 0.f);
    }
    g.bias = upload_f32(b);
  }
  return g;
}

uint64_t linear_bytes(const model::Linear* L, bool allow_int8) {
  if (!L || L->name().empty()) return 0;
  const uint64_t n = uint64_t(L->out_features()) * uint64_t(L->in_features());
  const bool i8 = allow_int8 && L->storage() == model::Storage::Int8;
  return (i8 ? n + uint64_t(L->out_features()) * 4 : n * 2) + L->bias().size() * 4;
}

CudaModel::CudaModel(const std::string& dir, const LoadOptions& opts) {
  // Kept fp16 weight columns (--keep-outlier-columns) are a CPU-only feature for now.
  const char* kNoKept = "--keep-outlier-columns is not supported on cuda yet; use --device cpu";
  if (opts.precision == Precision::Int8 && !opts.kept_columns.empty()) throw Error(kNoKept);
  init_device(opts);
  // The CPU side reads the checkpoint and prepares every weight (quantizing on the CPU backend,
  // which is bit-identical to the CUDA one); its host copy is dropped after the upload.
  LoadOptions cpu = opts;
  cpu.device = "cpu";
  std::unique_ptr<Model> host = model::load_transformer(dir, cpu);
  if (host->info().kept_columns > 0) throw Error(kNoKept);  // an 8-bit checkpoint saved with them
  const model::TransformerView v = model::view_transformer(*host);
  c_ = *v.config;
  s_ = *v.spec;
  info_ = host->info();
  threshold_ = prec_ == Precision::Int8 ? v.threshold : 0.f;
  act_ = act_code(c_.activation);

  // The input embedding table stays in host memory unless lm_head shares it (or asked otherwise).
  const bool host_embed = !opts.gpu_embeddings && v.lm_head != v.embed;
  uint64_t need = (host_embed ? 0 : linear_bytes(v.embed, false)) + linear_bytes(v.pos_embed, false);
  if (v.lm_head != v.embed) need += linear_bytes(v.lm_head, false);
  for (const auto& L : v.layers)
    for (const model::Linear* x : {L.q, L.k, L.v, L.qkv, L.o, L.gate, L.up, L.down}) need += linear_bytes(x, true);
  check_fits(need);

  embed_ = upload_linear({v.embed}, false, "embedding", host_embed);
  if (v.pos_embed && !v.pos_embed->name().empty()) pos_embed_ = upload_linear({v.pos_embed}, false, "embedding");
  lm_head_ = v.lm_head == v.embed ? embed_ : upload_linear({v.lm_head}, false, "lm_head");
  embed_norm_ = upload_norm(v.embed_norm);
  final_norm_ = upload_norm(v.final_norm);
  layers_.resize(v.layers.size());
  for (size_t l = 0; l < v.layers.size(); ++l) {
    const model::LayerView& L = v.layers[l];
    GLayer& G = layers_[l];
    G.n1 = upload_norm(L.n1);
    G.n2 = upload_norm(L.n2);
    G.qkv = s_.qkv == QkvLayout::Separate ? upload_linear({L.q, L.k, L.v}, true, "q/k/v projection")
                                          : upload_linear({L.qkv}, true, "q/k/v projection");
    G.o = upload_linear({L.o}, true, "o projection");
    if (s_.mlp == model::MlpKind::Gated) G.gate_up = upload_linear({L.gate, L.up}, true, "gate/up projection");
    else G.up = upload_linear({L.up}, true, "up projection");
    G.down = upload_linear({L.down}, true, "down projection");
  }
  if (s_.pos == PosKind::RoPE) {
    inv_freq_ = upload_f32(*v.inv_freq);
    rot_half_ = int(v.inv_freq->size());
  }
  if (s_.pos == PosKind::ALiBi) slopes_ = upload_f32(*v.slopes);
  host.reset();
  finish_info();
}

GLinear CudaModel::synth_linear(int64_t out, int64_t in, bool int8, uint64_t seed, float a, bool host) {
  GLinear g;
  g.out = out;
  g.in = in;
  g.int8 = int8;
  const size_t n = size_t(out) * size_t(in);
  if (!int8) {
    g.w = host ? halloc(n * 2) : walloc(n * 2);
    if (io_ == DType::BF16)
      mk::fill_uniform_kernel<<<4 * sm_count_, 256, 0, st_>>>(static_cast<__nv_bfloat16*>(g.w), int64_t(n), seed, a);
    else
      mk::fill_uniform_kernel<<<4 * sm_count_, 256, 0, st_>>>(static_cast<__half*>(g.w), int64_t(n), seed, a);
    check_launch("fill_uniform_kernel");
    return g;
  }
  // fp16 weights generated into a temporary, then quantized on the device as loading does.
  void* tmp = nullptr;
  check(cudaMalloc(&tmp, n * 2), "cudaMalloc(temporary)");
  mk::fill_uniform_kernel<<<4 * sm_count_, 256, 0, st_>>>(static_cast<__half*>(tmp), int64_t(n), seed, a);
  check_launch("fill_uniform_kernel");
  g.w = walloc(n);
  g.scb = static_cast<float*>(walloc(size_t(out) * 4));
  be_->quantize_rowwise(DType::F16, tmp, out, in, 0.f, static_cast<int8_t*>(g.w), g.scb, nullptr);
  be_->synchronize();
  cudaFree(tmp);
  return g;
}

CudaModel::CudaModel(const ModelConfig& c, const LoadOptions& opts, uint64_t seed, float std) {
  init_device(opts);
  c_ = c;
  s_ = model::arch_for(c_);
  if (s_.family != Family::Llama && s_.family != Family::Qwen2)
    throw Error("synthetic GPU models: only the Llama family is supported");
  threshold_ = prec_ == Precision::Int8 ? opts.threshold : 0.f;
  act_ = act_code(c_.activation);
  const int64_t H = c_.hidden_size, V = c_.vocab_size, D = c_.head_dim, I = c_.intermediate_size;
  const int64_t qd = c_.num_heads * D, kvd = c_.num_kv_heads * D;
  const bool i8 = prec_ == Precision::Int8;
  const uint64_t per_w = i8 ? 1 : 2;
  const bool host_embed = !opts.gpu_embeddings && !c_.tie_word_embeddings;
  uint64_t need = uint64_t(V) * H * 2 * (c_.tie_word_embeddings || host_embed ? 1 : 2);
  need += uint64_t(c_.num_layers) * (uint64_t(qd + 2 * kvd) * H + uint64_t(H) * qd + 3 * uint64_t(I) * H) * per_w;
  check_fits(need);
  const float a = std * std::sqrt(3.0f);
  embed_ = synth_linear(V, H, false, seed * 1000 + 1, a, host_embed);
  lm_head_ = c_.tie_word_embeddings ? embed_ : synth_linear(V, H, false, seed * 1000 + 2, a);
  std::vector<float> ones(size_t(H), 1.0f);
  final_norm_.w = upload_f32(ones);
  // LLM.int8()'s systematic outlier features: 6 hidden dims whose norm weight is 8, so that the
  // q/k/v and gate/up inputs carry |x| >= 6 in those columns for most tokens (a handful of
  // outlier columns, as in real checkpoints), the other dims ~N(0, 1).
  std::vector<float> norm_w = ones;
  for (int64_t i = 0; i < 6 && H > 64; ++i) norm_w[size_t(i * (H / 6) + 7)] = 8.0f;
  layers_.resize(size_t(c_.num_layers));
  for (int64_t l = 0; l < c_.num_layers; ++l) {
    GLayer& G = layers_[size_t(l)];
    const uint64_t s = seed * 1000 + 10 + uint64_t(l) * 8;
    G.n1.w = upload_f32(norm_w);
    G.n2.w = upload_f32(norm_w);
    G.qkv = synth_linear(qd + 2 * kvd, H, i8, s + 0, a);
    G.o = synth_linear(H, qd, i8, s + 1, a);
    G.gate_up = synth_linear(2 * I, H, i8, s + 2, a);
    G.down = synth_linear(H, I, i8, s + 3, a);
  }
  const std::vector<float> inv = model::rope_inv_freq(c_);
  inv_freq_ = upload_f32(inv);
  rot_half_ = int(inv.size());
  be_->synchronize();
  info_.architecture = c_.architecture;
  info_.model_type = c_.model_type;
  info_.precision = std::string(precision_name(prec_));
  info_.threshold = threshold_;
  info_.layers = c_.num_layers;
  info_.hidden_size = H;
  info_.heads = c_.num_heads;
  info_.kv_heads = c_.num_kv_heads;
  info_.vocab_size = V;
  finish_info();
}

void CudaModel::finish_info() {
  info_.weight_bytes = resident_ + host_bytes_;
  info_.host_weight_bytes = host_bytes_;
  info_.threshold = threshold_;
}

CudaModel::~CudaModel() {
  cudaSetDevice(device_);
  if (st_) cudaStreamSynchronize(st_);
  for (void* p : allocs_) cudaFree(p);
  for (void* p : host_allocs_) cudaFreeHost(p);
  if (part_scratch_) cudaFree(part_scratch_);
  if (blas_) cublasDestroy(blas_);
  if (blas_ws_) cudaFree(blas_ws_);
}

// ---------------------------------------------------------------------------------------------
// Forward

template <class T> constexpr cudaDataType_t cuda_type();
template <> constexpr cudaDataType_t cuda_type<__half>() { return CUDA_R_16F; }
template <> constexpr cudaDataType_t cuda_type<__nv_bfloat16>() { return CUDA_R_16BF; }
template <class T> constexpr DType dtype_t();
template <> constexpr DType dtype_t<__half>() { return DType::F16; }
template <> constexpr DType dtype_t<__nv_bfloat16>() { return DType::BF16; }

// Y [M, out] = X [M, in] W^T (+ bias): int8_linear, or cuBLAS with float32 accumulation
// (row-major Y = X W^T is column-major Y^T = W X^T: op(A) = W^T viewed as [in, out], "TN").
template <class T>
void CudaModel::linear(const GLinear& L, const T* X, int64_t M, T* Y) {
  if (!L.parts.empty()) {
    // Each part into scratch, then into its column block of Y [M, L.out]. The scratch grows on
    // the first (uncaptured) run of a shape, so graph replays allocate nothing.
    size_t need = 0;
    for (const GLinear& p : L.parts) need = std::max(need, size_t(M) * size_t(p.out) * sizeof(T));
    if (need > part_scratch_bytes_) {
      check(cudaStreamSynchronize(st_), "cudaStreamSynchronize");
      if (part_scratch_) cudaFree(part_scratch_);
      part_scratch_ = nullptr;
      part_scratch_bytes_ = 0;
      check(cudaMalloc(&part_scratch_, need), "cudaMalloc(projection parts)");
      part_scratch_bytes_ = need;
    }
    T* tmp = static_cast<T*>(part_scratch_);
    int64_t col = 0;
    for (const GLinear& p : L.parts) {
      linear<T>(p, X, M, tmp);
      check(cudaMemcpy2DAsync(Y + col, size_t(L.out) * sizeof(T), tmp, size_t(p.out) * sizeof(T),
                              size_t(p.out) * sizeof(T), size_t(M), cudaMemcpyDeviceToDevice, st_),
            "cudaMemcpy2DAsync(projection part)");
      col += p.out;
    }
    return;
  }
  if (L.int8) {
    be_->int8_linear(L.w8(), dtype_t<T>(), X, M, threshold_, L.bias, Y);
    return;
  }
  const float one = 1.f, zero = 0.f;
  check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(L.out), int(M), int(L.in), &one, L.w,
                          cuda_type<T>(), int(L.in), X, cuda_type<T>(), int(L.in), &zero, Y, cuda_type<T>(),
                          int(L.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
  if (L.bias) {
    launch("bias_kernel", mk::bias_kernel<T>, grid_for(M * L.out), 256, 0, M, L.out, L.bias, Y);
  }
}

// logits [rows, V] float32 = X [rows, H] lm_head^T, float32 accumulation and output.
template <class T>
void CudaModel::lm_head(const T* X, int64_t rows, float* logits) {
  const float one = 1.f, zero = 0.f;
  check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(lm_head_.out), int(rows), int(lm_head_.in), &one,
                          lm_head_.w, cuda_type<T>(), int(lm_head_.in), X, cuda_type<T>(), int(lm_head_.in),
                          &zero, logits, CUDA_R_32F, int(lm_head_.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx(lm_head)");
}

CudaSession::CudaSession(CudaModel& m, int64_t capacity, int64_t nseq)
    : m_(m), capacity_(capacity), nseq_(nseq), pos_(size_t(nseq), 0) {}

template <class T>
T* CudaSession::cache(void* base, int64_t l) const {
  const int64_t kvd = m_.c_.num_kv_heads * m_.c_.head_dim;
  return static_cast<T*>(base) + ((l * nseq_ + seq_) * cache_cap_) * kvd;
}

CudaSession::~CudaSession() {
  cudaSetDevice(m_.device_);
  cudaStreamSynchronize(m_.st_);
  if (graph_) cudaGraphExecDestroy(graph_);
  for (void* p : {K_, V_, (void*)x_, (void*)y_, a_, a2_, qkv_, ctx_, t_, b_, gu_, u_, (void*)logits_,
                  (void*)part_acc_, (void*)part_ml_, (void*)attn_tickets_, (void*)d_tok_, (void*)d_pos_, scores_})
    if (p) cudaFree(p);
  if (h_tok_) cudaFreeHost(h_tok_);
  if (h_pos_) cudaFreeHost(h_pos_);
}

void* CudaSession::dalloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 16));
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    throw Error(std::string("CUDA session: out of GPU memory allocating ") + what + " (" + gib(bytes) +
                ", " + gib(fr) + " free); use a smaller session (max_tokens) or prompt");
  }
  return p;
}

// Grows the KV cache geometrically (up to the session's capacity), keeping its contents.
void CudaSession::ensure_cache(int64_t tokens) {
  if (tokens <= cache_cap_) return;
  const int64_t cap = std::min<int64_t>(capacity_, std::max<int64_t>({tokens, 2 * cache_cap_, 256}));
  const ModelConfig& c = m_.c_;
  const size_t kvd = size_t(c.num_kv_heads * c.head_dim), L = size_t(c.num_layers);
  const size_t bytes = L * size_t(nseq_) * size_t(cap) * kvd * 2;
  const int64_t used = *std::max_element(pos_.begin(), pos_.end());
  check(cudaStreamSynchronize(m_.st_), "cudaStreamSynchronize");
  void* K = dalloc(bytes, "the KV cache");
  void* V = nullptr;
  try {
    V = dalloc(bytes, "the KV cache");
  } catch (...) {
    cudaFree(K);
    throw;
  }
  if (K_ && used > 0) {
    // Per (layer, sequence): the first `used` rows of the old [cache_cap_, kvd] slab.
    const size_t slabs = L * size_t(nseq_);
    check(cudaMemcpy2DAsync(K, size_t(cap) * kvd * 2, K_, size_t(cache_cap_) * kvd * 2, size_t(used) * kvd * 2,
                            slabs, cudaMemcpyDeviceToDevice, m_.st_), "cudaMemcpy2D(K cache)");
    check(cudaMemcpy2DAsync(V, size_t(cap) * kvd * 2, V_, size_t(cache_cap_) * kvd * 2, size_t(used) * kvd * 2,
                            slabs, cudaMemcpyDeviceToDevice, m_.st_), "cudaMemcpy2D(V cache)");
    check(cudaStreamSynchronize(m_.st_), "cudaStreamSynchronize");
  }
  if (K_) cudaFree(K_);
  if (V_) cudaFree(V_);
  K_ = K;
  V_ = V;
  cache_cap_ = cap;
  ++generation_;
}

// Key splits of the decode attention (M <= 16): about 2 blocks per SM (H100, Llama-3-8B shape,
// 2K-token cache, batch 1: 5.73 ms/token at 2 per SM, 5.83 at 1, 6.07 at 4, 6.58 at 8). Fixed per
// M (not per cache length) so that one CUDA graph serves every step; empty splits exit early.
int attn_splits(int64_t nq, int64_t Mq, int64_t group, int64_t nkv, int sms) {
  if (Mq > 16) return 1;
  // Tuning override for measurements: LLMINT8_CUDA_ATTN_BLOCKS_PER_SM (default 2).
  static const int per_sm = [] {
    const char* e = std::getenv("LLMINT8_CUDA_ATTN_BLOCKS_PER_SM");
    return e && std::atoi(e) > 0 ? std::atoi(e) : 2;
  }();
  const int64_t blocks = nq * ((Mq * group + mk::kAttnRows - 1) / mk::kAttnRows) * nkv;
  return int(std::clamp<int64_t>((int64_t(per_sm) * sms + blocks - 1) / blocks, 1, mk::kAttnMaxSplits));
}

// Key splits of decode_attention_kernel (one query per sequence): about one block per SM
// over the nq * nkv (sequence, kv head) pairs, or `forced` (> 0); fixed per step shape, like
// attn_splits, so one graph serves every cache length.
int decode_attn_splits(int64_t nq, int64_t nkv, int sms, int forced) {
  const int64_t blocks = nq * nkv;
  const int64_t S = forced > 0 ? forced : (sms + blocks - 1) / blocks;
  return int(std::clamp<int64_t>(S, 1, mk::kAttnMaxSplits));
}

void CudaSession::ensure_scratch(int64_t M, int64_t rows) {
  if (M <= scr_M_ && rows <= scr_rows_) return;
  check(cudaStreamSynchronize(m_.st_), "cudaStreamSynchronize");
  for (void** p : {&a_, &a2_, &qkv_, &ctx_, &t_, &b_, &gu_, &u_, (void**)&x_, (void**)&y_, (void**)&logits_,
                   (void**)&part_acc_, (void**)&part_ml_, (void**)&attn_tickets_, (void**)&d_tok_, (void**)&d_pos_}) {
    if (*p) cudaFree(*p);
    *p = nullptr;
  }
  if (h_tok_) cudaFreeHost(h_tok_);
  if (h_pos_) cudaFreeHost(h_pos_);
  h_tok_ = nullptr;
  h_pos_ = nullptr;
  const ModelConfig& c = m_.c_;
  M = std::max(M, scr_M_);
  rows = std::max(rows, scr_rows_);
  const size_t H = size_t(c.hidden_size), qd = size_t(c.num_heads * c.head_dim),
               kvd = size_t(c.num_kv_heads * c.head_dim), I = size_t(c.intermediate_size);
  const size_t m = size_t(M);
  x_ = static_cast<float*>(dalloc(m * H * 4, "activations"));
  y_ = static_cast<float*>(dalloc(m * H * 4, "activations"));
  a_ = dalloc(m * H * 2, "activations");
  a2_ = dalloc(m * H * 2, "activations");
  t_ = dalloc(m * H * 2, "activations");
  b_ = dalloc(m * H * 2, "activations");
  qkv_ = dalloc(m * (qd + 2 * kvd) * 2, "activations");
  ctx_ = dalloc(m * qd * 2, "activations");
  gu_ = dalloc(m * 2 * I * 2, "activations");
  u_ = dalloc(m * I * 2, "activations");
  logits_ = static_cast<float*>(dalloc(size_t(rows) * size_t(c.vocab_size) * 4, "logits"));
  const size_t S = mk::kAttnMaxSplits;  // the most splits attn_splits picks (M <= 16 only)
  const size_t pm = std::max<size_t>(std::min<size_t>(m, 16), size_t(nseq_));  // decode rows
  part_acc_ = static_cast<float*>(dalloc(S * pm * size_t(c.num_heads) * size_t(c.head_dim) * 4, "attention partials"));
  part_ml_ = static_cast<float*>(dalloc(S * pm * size_t(c.num_heads) * 2 * 4, "attention partials"));
  const size_t ntickets = size_t(nseq_) * size_t(c.num_kv_heads);
  attn_tickets_ = static_cast<unsigned*>(dalloc(ntickets * 4, "attention partials"));
  check(cudaMemset(attn_tickets_, 0, ntickets * 4), "cudaMemset(attention tickets)");
  d_tok_ = static_cast<int32_t*>(dalloc(m * 4, "token ids"));
  d_pos_ = static_cast<int*>(dalloc(size_t(nseq_) * 4, "positions"));
  check(cudaMallocHost(&h_tok_, m * 4), "cudaMallocHost");
  check(cudaMallocHost(&h_pos_, size_t(nseq_) * 4), "cudaMallocHost");
  scr_M_ = M;
  scr_rows_ = rows;
  ++generation_;
}

template <class T>
void CudaSession::attention(int64_t l, const T* in, int64_t M, T* out) {
  CudaModel& m = m_;
  const ModelConfig& c = m.c_;
  const GLayer& L = m.layers_[size_t(l)];
  const int D = int(c.head_dim), NH = int(c.num_heads), NKV = int(c.num_kv_heads);
  const int qd = NH * D, kvd = NKV * D;
  const int64_t ldq = qd + 2 * kvd;
  T* qkv = static_cast<T*>(qkv_);
  m.linear(L.qkv, in, M, qkv);
  T* Kc = cache<T>(K_, l);
  T* Vc = cache<T>(V_, l);
  const int64_t seq_stride = cache_cap_ * kvd;  // between the sequences of a batched step
  const mk::QueryGroups qg{d_pos_, int(Mq_), seq_stride};
  const int group = NH / NKV;
  // One query per sequence (decode steps): decode_attention_kernel, which also rotates q and k and
  // appends the token's k and v (no rope_kv_kernel), and merges its splits itself.
  const int CG = mk::dec_attn_chunks(D, group);
  const size_t dec_smem = mk::decode_attn_smem_bytes(D, group, CG);
  const bool decode_kernel = Mq_ == 1 && m.use_decode_attention_ && D % 8 == 0 && D <= 256 &&
                             group <= mk::kDecMaxWarps && dec_smem <= kDecAttnSmemMax;
  if (!decode_kernel) {
    if (m.s_.pos == PosKind::RoPE)
      m.launch("rope_kv_kernel", mk::rope_kv_kernel<T>, dim3(unsigned(M), unsigned(NH + NKV)),
               unsigned(std::min(256, (D + 31) / 32 * 32)), 0, qkv, ldq, NH, NKV, D, m.rot_half_, m.inv_freq_, qg,
               Kc, Vc);
    else
      m.launch("kv_append_kernel", mk::kv_append_kernel<T>, unsigned(M), 256, 0, qkv, ldq, qd, kvd, qg, Kc, Vc);
  }

  float scale = 1.0f / std::sqrt(float(D));
  if (c.family == Family::GPT2) {
    if (!c.scale_attn_weights) scale = 1.0f;
    if (c.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
  }
  if (Mq_ > 16) {  // one sequence's prompt (nq == 1)
    prefill_attention<T>(qkv, Kc, Vc, M, scale);
    m.linear(L.o, static_cast<const T*>(ctx_), M, out);
    return;
  }
  if (decode_kernel) {
    const int S = decode_attn_splits(nq_, NKV, m.sm_count_, m.dec_attn_splits_);
    const mk::DecodeAttnParams<T> p{qkv, ldq, Kc, Vc, static_cast<T*>(ctx_), part_acc_, part_ml_, attn_tickets_,
                                    qg, m.slopes_, m.s_.pos == PosKind::RoPE ? m.inv_freq_ : nullptr, scale,
                                    int(nq_), NH, NKV, D, int(c.sliding_window), S, CG, m.rot_half_};
    const dim3 grid{unsigned(nq_), unsigned(NKV), unsigned(S)};
    const unsigned threads = unsigned(32 * group * CG);
    auto* kern = D <= 64 ? mk::decode_attention_kernel<T, 2>
                 : D <= 128 ? mk::decode_attention_kernel<T, 4> : mk::decode_attention_kernel<T, 8>;
    m.launch("decode_attention_kernel", kern, grid, threads, dec_smem, p);
    m.linear(L.o, static_cast<const T*>(ctx_), M, out);
    return;
  }
  const int S = attn_splits(nq_, Mq_, group, NKV, m.sm_count_);
  mk::AttnParams<T> p{qkv, ldq, Kc, Vc, static_cast<T*>(ctx_), part_acc_, part_ml_, qg, m.slopes_, scale,
                      int(M), NH, NKV, D, int(c.sliding_window), S};
  const int64_t blocks_per_group = (Mq_ * group + mk::kAttnRows - 1) / mk::kAttnRows;
  const dim3 grid(unsigned(nq_ * blocks_per_group), unsigned(NKV), unsigned(S));
  if (grid.x > 2147483647u || grid.y > 65535) throw Error("attention: shape too large");
  if (D % 8 == 0)
    m.launch("attention_kernel", mk::attention_kernel<T, true>, grid, mk::kAttnThreads, mk::attn_smem_bytes(D, 2, true), p);
  else
    m.launch("attention_kernel", mk::attention_kernel<T, false>, grid, mk::kAttnThreads, mk::attn_smem_bytes(D, 2, false), p);
  if (S > 1)
    m.launch("attn_combine_kernel", mk::attn_combine_kernel<T>, unsigned(M * NH), unsigned((std::max(D, S) + 31) / 32 * 32),
             0, part_acc_, part_ml_, S, int(M * NH), D, static_cast<T*>(ctx_));
  m.linear(L.o, static_cast<const T*>(ctx_), M, out);
}

// Many queries (prefill): per chunk of Mc queries, S = scale * Q K^T for every head by cuBLAS
// (tensor cores, float32 accumulation; stored in fp16 for fp16 models -- as transformers' eager
// fp16 attention stores its scores -- and in float32 for bf16 ones), a masked softmax in float32
// into 16-bit P, then ctx = P V by cuBLAS. Only an [NH, Mc, T] block of scores exists at a time
// (Mc keeps it under 128 MiB). GQA without copies: for each j < group one strided-batched call
// covers heads g * group + j of every kv head g (Q columns stride group * D, K/V columns stride D).
template <class T>
void CudaSession::prefill_attention(const T* qkv, const T* Kc, const T* Vc, int64_t M, float scale) {
  using ST = std::conditional_t<std::is_same_v<T, __half>, __half, float>;
  const cudaDataType_t st_type = std::is_same_v<T, __half> ? CUDA_R_16F : CUDA_R_32F;
  CudaModel& m = m_;
  const ModelConfig& c = m.c_;
  const int D = int(c.head_dim), NH = int(c.num_heads), NKV = int(c.num_kv_heads), group = NH / NKV;
  const int64_t qd = int64_t(NH) * D, kvd = int64_t(NKV) * D, ldq = qd + 2 * kvd;
  const int64_t p0 = pos_[size_t(seq_)], Tfull = p0 + M;
  const size_t per_score = sizeof(ST) + sizeof(T);
  const size_t budget = 128ull << 20;
  const int64_t Mc = std::clamp<int64_t>(int64_t(budget / (size_t(NH) * size_t(Tfull) * per_score)), 16, M);
  const size_t need = size_t(NH) * size_t(Mc) * size_t(Tfull) * per_score + 16;
  if (need > scores_bytes_) {
    check(cudaStreamSynchronize(m.st_), "cudaStreamSynchronize");
    if (scores_) cudaFree(scores_);
    scores_ = nullptr;
    scores_bytes_ = 0;
    scores_ = dalloc(need, "attention scores");
    scores_bytes_ = need;
  }
  ST* S = static_cast<ST*>(scores_);
  T* P = reinterpret_cast<T*>(S + (size_t(NH) * size_t(Mc) * size_t(Tfull) + 7) / 8 * 8);
  T* ctx = static_cast<T*>(ctx_);
  const float one = 1.f, zero = 0.f;
  for (int64_t c0 = 0; c0 < M; c0 += Mc) {
    const int64_t mc = std::min(Mc, M - c0), Tc = p0 + c0 + mc;
    const int64_t blk = mc * Tc;  // one head's scores
    for (int j = 0; j < group; ++j)
      check_blas(cublasGemmStridedBatchedEx(
                     m.blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(Tc), int(mc), D, &scale, Kc, cuda_type<T>(), int(kvd), D,
                     qkv + c0 * ldq + int64_t(j) * D, cuda_type<T>(), int(ldq), int64_t(group) * D, &zero,
                     S + size_t(j) * NKV * blk, st_type, int(Tc), blk, NKV, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx(QK^T)");
    m.launch("softmax_rows_kernel", mk::softmax_rows_kernel<T, ST>, unsigned(int64_t(NH) * mc), 256, 0, S, P, Tc,
             int(Tc), int(mc), NKV, group, int(p0 + c0), 1.0f, m.slopes_, int(c.sliding_window));
    for (int j = 0; j < group; ++j)
      check_blas(cublasGemmStridedBatchedEx(
                     m.blas_, CUBLAS_OP_N, CUBLAS_OP_N, D, int(mc), int(Tc), &one, Vc, cuda_type<T>(), int(kvd), D,
                     P + size_t(j) * NKV * blk, cuda_type<T>(), int(Tc), blk, &zero, ctx + c0 * qd + int64_t(j) * D,
                     cuda_type<T>(), int(qd), int64_t(group) * D, NKV, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx(PV)");
  }
}

template <class T>
void CudaSession::mlp(int64_t l, const T* in, int64_t M, T* out) {
  CudaModel& m = m_;
  const GLayer& L = m.layers_[size_t(l)];
  const int64_t I = m.c_.intermediate_size;
  T* u = static_cast<T*>(u_);
  if (L.gate_up.present()) {
    // Decode steps: act(gate) * up straight out of the int8 row GEMV (no [M, 2I] intermediate,
    // no act_kernel); otherwise [gate | up] into gu_, then act_kernel.
    const bool fused = m.fused_act_ && L.gate_up.int8 && L.gate_up.parts.empty() &&
                       int8_linear_gated(*m.be_, L.gate_up.w8(), dtype_t<T>(), in, M, m.threshold_, L.gate_up.bias,
                                         m.act_, u);
    if (!fused) {
      T* gu = static_cast<T*>(gu_);
      m.linear(L.gate_up, in, M, gu);
      m.launch("act_kernel", mk::act_kernel<T>, grid_for(M * I), 256, 0, M, I, gu, u, m.act_);
    }
  } else {
    m.linear(L.up, in, M, u);
    m.launch("act_kernel", mk::act_kernel<T>, grid_for(M * I), 256, 0, M, I, nullptr, u, m.act_);
  }
  m.linear(L.down, static_cast<const T*>(u), M, out);
}

// The whole forward pass of M tokens (ids in d_tok_, position in d_pos_) on the stream; the
// logits of the last `rows` tokens land in logits_. No host synchronisation.
template <class T>
void CudaSession::enqueue(int64_t M, int64_t rows) {
  CudaModel& m = m_;
  const ModelConfig& c = m.c_;
  const ArchSpec& s = m.s_;
  const int64_t H = c.hidden_size, n = M * H;
  cudaStream_t st = m.st_;
  T* a = static_cast<T*>(a_);
  T* a2 = static_cast<T*>(a2_);
  T* t = static_cast<T*>(t_);
  T* b = static_cast<T*>(b_);
  const bool rms = s.norm == NormKind::RMSNorm;
  // A residual add x = (a2 + a1) + (res_t or x) whose result is next normalized is deferred and
  // fused into that norm's kernel (one launch fewer, same values); `pending` holds it.
  mk::ResidualAdd pending;
  auto norm = [&](const GNorm& g, float* in, int64_t r, T* out_t, float* out_f) {
    // Few rows (decode): 1024 threads, the row's loads all in flight at once.
    const unsigned th = r <= 64 ? 1024 : 256;
    mk::ResidualAdd add = pending;
    if (add.a1) {
      const int64_t skip = (M - r) * H;  // the last r rows (the final norm of the logits rows)
      add.a1 = static_cast<const T*>(add.a1) + skip;
      if (add.a2) add.a2 = static_cast<const T*>(add.a2) + skip;
      if (add.res_t) add.res_t = static_cast<const T*>(add.res_t) + skip;
    }
    pending = {};
    const bool vec = H % 4 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0;
    m.launch("norm_kernel", vec ? mk::norm_kernel<T, true> : mk::norm_kernel<T, false>, unsigned(r), th, 0, in, H, g.w,
             g.b, c.norm_eps, rms, out_t, out_f, add);
  };
  auto residual = [&](const T* a1, const T* a2p, const T* res_t, const float* res_f, float* out) {
    m.launch("residual_kernel", mk::residual_kernel<T>, grid_for(n), 256, 0, n, a1, a2p, res_t, res_f, out);
  };
  // x_ += the residual: deferred into the next norm unless res_t is that norm's output buffer
  // (a: the post-layernorm residual of BLOOM-style configs), which the fused kernel cannot read
  // safely while writing.
  auto add_to_x = [&](const T* a1, const T* a2p, const T* res_t) {
    if (res_t == a) residual(a1, a2p, res_t, x_, x_);
    else pending = {a1, a2p, res_t};
  };
  auto flush = [&] {
    if (pending.a1)
      residual(static_cast<const T*>(pending.a1), static_cast<const T*>(pending.a2),
               static_cast<const T*>(pending.res_t), x_, x_);
    pending = {};
  };

  // (512 threads: a Llama-sized row is one 16-byte load per thread, all in flight at once -- one
  // PCIe round trip when the table is in host memory. A plain launch: the first kernel of the
  // pass, after the copies of the tokens and positions.)
  mk::embed_kernel<T><<<unsigned(M), 512, 0, st>>>(d_tok_, H, static_cast<const T*>(m.embed_.w),
                                                   static_cast<const T*>(m.pos_embed_.w),
                                                   mk::QueryGroups{d_pos_, int(Mq_), 0}, int(s.pos_offset), x_);
  check_launch("embed_kernel");
  if (m.embed_norm_.w) norm(m.embed_norm_, x_, M, nullptr, x_);  // (nothing pending yet)

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const GLayer& L = m.layers_[size_t(l)];
    switch (s.block) {
      case BlockKind::PreNorm:
        norm(L.n1, x_, M, a, nullptr);
        attention<T>(l, a, M, t);
        add_to_x(t, nullptr, s.residual_post_layernorm ? a : nullptr);
        norm(L.n2, x_, M, a, nullptr);
        mlp<T>(l, a, M, t);
        add_to_x(t, nullptr, s.residual_post_layernorm ? a : nullptr);
        break;
      case BlockKind::Parallel:
        norm(L.n1, x_, M, a, nullptr);
        attention<T>(l, a, M, t);
        norm(L.n2, x_, M, a2, nullptr);
        mlp<T>(l, a2, M, b);
        add_to_x(t, b, nullptr);  // x = (b + t) + x
        break;
      case BlockKind::PostNorm:
        flush();
        m.launch("to_t_kernel", mk::to_t_kernel<T>, grid_for(n), 256, 0, n, x_, a);
        attention<T>(l, a, M, t);
        residual(t, nullptr, nullptr, x_, y_);
        norm(L.n1, y_, M, a, x_);
        mlp<T>(l, a, M, t);
        residual(t, nullptr, nullptr, x_, y_);
        norm(L.n2, y_, M, nullptr, x_);
        break;
    }
  }
  if (rows == 0) return;  // (a pending add is not needed: x_ is dead after the last layer)
  float* last = x_ + (M - rows) * H;
  if (m.final_norm_.w) {
    norm(m.final_norm_, last, rows, a, nullptr);
  } else {
    flush();
    m.launch("to_t_kernel", mk::to_t_kernel<T>, grid_for(rows * H), 256, 0, rows * H, last, a);
  }
  m.lm_head<T>(a, rows, logits_);
}

void CudaSession::run(int64_t seq, std::span<const int32_t> tokens, std::vector<float>* logits, bool all_logits) {
  const ModelConfig& c = m_.c_;
  const int64_t M = int64_t(tokens.size()), V = c.vocab_size;
  if (M == 0) throw Error("forward: no tokens given");
  // One sequence's M tokens, or one token of each of the nseq_ sequences.
  const int64_t first = seq < 0 ? 0 : seq, nq = seq < 0 ? nseq_ : 1, Mq = seq < 0 ? 1 : M;
  int64_t end = 0;
  for (int64_t g = first; g < first + nq; ++g) {
    if (pos_[size_t(g)] + Mq > capacity_)
      throw Error("forward: " + std::to_string(pos_[size_t(g)] + Mq) + " tokens exceed the session's capacity of " +
                  std::to_string(capacity_));
    end = std::max(end, pos_[size_t(g)] + Mq);
  }
  for (int64_t i = 0; i < M; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= V)
      throw Error("forward: token id " + std::to_string(tokens[size_t(i)]) + " out of range [0, " +
                  std::to_string(V) + ")");
  check(cudaSetDevice(m_.device_), "cudaSetDevice");
  const int64_t rows = logits ? (all_logits ? M : 1) : 0;
  ensure_cache(end);
  ensure_scratch(M, std::max<int64_t>(rows, 1));
  seq_ = first;
  nq_ = nq;
  Mq_ = Mq;
  cudaStream_t st = m_.st_;
  // The previous step's copies out of the pinned buffers are finished (forward ends synchronised).
  std::memcpy(h_tok_, tokens.data(), size_t(M) * 4);
  for (int64_t g = 0; g < nq; ++g) h_pos_[g] = int(pos_[size_t(first + g)]);
  check(cudaMemcpyAsync(d_tok_, h_tok_, size_t(M) * 4, cudaMemcpyHostToDevice, st), "cudaMemcpy(tokens)");
  check(cudaMemcpyAsync(d_pos_, h_pos_, size_t(nq) * 4, cudaMemcpyHostToDevice, st), "cudaMemcpy(positions)");

  const bool bf = m_.io_ == DType::BF16;
  auto enqueue_all = [&](int64_t r) { bf ? enqueue<__nv_bfloat16>(M, r) : enqueue<__half>(M, r); };
  const char* ng = std::getenv("LLMINT8_CUDA_NO_GRAPH");  // measurements: 1 = plain launches
  const bool no_graph = ng && std::atoi(ng) != 0;
  // One-token steps (of one sequence, or of all of them) with their logits replay a graph: its
  // kernels read tokens and positions from device memory, so one capture serves every step.
  const bool graphable = Mq == 1 && rows == M && !no_graph && (seq < 0 || nseq_ == 1);
  const int64_t key_seq = seq < 0 ? -1 : seq;
  if (graphable && graph_ && graph_generation_ == generation_ && graph_seq_ == key_seq && graph_nq_ == nq) {
    check(cudaGraphLaunch(graph_, st), "cudaGraphLaunch");
  } else {
    enqueue_all(rows);
    if (graphable) {
      // Capture the step just run (its shapes are warm: nothing grows during capture) for the
      // next steps.
      if (graph_) cudaGraphExecDestroy(graph_);
      graph_ = nullptr;
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      try {
        enqueue_all(rows);
      } catch (...) {
        cudaStreamEndCapture(st, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      check(cudaStreamEndCapture(st, &g), "cudaStreamEndCapture");
      const cudaError_t e = cudaGraphInstantiate(&graph_, g, 0);
      cudaGraphDestroy(g);
      if (e != cudaSuccess) {
        static bool warned = false;
        if (!warned) std::fprintf(stderr, "llmint8: CUDA graph instantiation failed (%s); decoding without graphs\n",
                                  cudaGetErrorString(e));
        warned = true;
        cudaGetLastError();
        graph_ = nullptr;
      } else {
        graph_generation_ = generation_;
        graph_seq_ = key_seq;
        graph_nq_ = nq;
      }
    }
  }
  if (logits) {
    logits->resize(size_t(rows * V));
    check(cudaMemcpyAsync(logits->data(), logits_, size_t(rows * V) * 4, cudaMemcpyDeviceToHost, st),
          "cudaMemcpy(logits)");
  }
  check(cudaStreamSynchronize(st), "forward");
  for (int64_t g = first; g < first + nq; ++g) pos_[size_t(g)] += Mq;
}

}  // namespace

std::unique_ptr<Model> load_cuda_model(const std::string& dir, const LoadOptions& opts) {
  return std::make_unique<CudaModel>(dir, opts);
}

std::unique_ptr<Model> make_synthetic_cuda_model(const LlamaShape& sh, const LoadOptions& opts,
                                                 uint64_t seed, float std) {
  if (sh.hidden <= 0 || sh.layers <= 0 || sh.heads <= 0 || sh.kv_heads <= 0 || sh.heads % sh.kv_heads != 0 ||
      sh.head_dim <= 0 || sh.head_dim % 2 != 0 || sh.head_dim > 256 || sh.intermediate <= 0 || sh.vocab <= 0 ||
      sh.max_positions <= 0)
    throw Error("make_synthetic_cuda_model: invalid shape");
  ModelConfig c;
  c.dir = "synthetic Llama-shaped model";
  c.file = c.dir;
  c.model_type = "llama";
  c.architecture = "LlamaForCausalLM";
  c.family = Family::Llama;
  c.hidden_size = sh.hidden;
  c.num_layers = sh.layers;
  c.num_heads = sh.heads;
  c.num_kv_heads = sh.kv_heads;
  c.head_dim = sh.head_dim;
  c.intermediate_size = sh.intermediate;
  c.vocab_size = sh.vocab;
  c.max_positions = sh.max_positions;
  c.norm_eps = sh.norm_eps;
  c.rope_theta = sh.rope_theta;
  c.activation = "silu";
  c.tie_word_embeddings = false;
  return std::make_unique<CudaModel>(c, opts, seed, std);
}

uint64_t resident_weight_bytes(const Model& m) {
  const auto* g = dynamic_cast<const CudaModel*>(&m);
  return g ? g->resident() : 0;
}

}  // namespace llmint8::cuda
