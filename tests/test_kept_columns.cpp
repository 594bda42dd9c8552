// --keep-outlier-columns: kept fp16 weight columns beside the int8 weight
// (include/llmint8/backend.h, "kept columns").
//  * Backends: the reference and every CPU kernel tier agree bit for bit with kept columns (odd
//    shapes, M = 1 and 0, zero rows, every io dtype); kept columns that are not outliers at run
//    time change nothing; keeping all outlier columns cuts the error against float64.
//  * Model: kept columns at load and from a saved checkpoint give identical weights and logits;
//    malformed kept tensors are refused with one line naming the file; the calibration pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "llmint8/backend.h"
#include "llmint8/error.h"
#include "llmint8/model.h"
#include "llmint8/runtime.h"
#include "model/quantize.h"
#include "model/transformer.h"
#include "numeric_util.h"
#include "temp_dir.h"

namespace {

using namespace llmint8;
using testutil::HostArray;
using testutil::Rng;
namespace fs = std::filesystem;

// A quantized weight with optional kept columns, all in host memory.
struct HostWeight {
  int64_t N = 0, K = 0;
  std::vector<float> w16;  // the fp16-cast weight [N, K] (what CB/SCB come from), as float
  std::vector<int8_t> CB;
  std::vector<float> SCB;
  std::vector<int32_t> kept;
  std::vector<uint16_t> kept_w;  // [N, kept.size()] fp16 bits

  HostWeight(std::vector<float> w, int64_t n, int64_t k) : N(n), K(k), w16(std::move(w)) {
    for (float& x : w16) x = to_float(to_f16(x));
    CB.resize(size_t(N * K));
    SCB.resize(size_t(N));
    ref::quantize_rowwise(w16.data(), N, K, 0.f, CB.data(), SCB.data(), nullptr);
  }
  void keep(std::vector<int32_t> cols) {
    kept = std::move(cols);
    const int64_t nk = int64_t(kept.size());
    kept_w.resize(size_t(N * nk));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < nk; ++j) kept_w[size_t(n * nk + j)] = to_f16(w16[size_t(n * K + kept[size_t(j)])]).bits;
  }
  Int8Weight view(bool with_kept = true) const {
    Int8Weight w{N, K, CB.data(), SCB.data()};
    if (with_kept && !kept.empty()) {
      w.n_kept = int64_t(kept.size());
      w.kept_cols = kept.data();
      w.kept_w = kept_w.data();
    }
    return w;
  }
};

// Random weights; the columns in `small` are divided by `shrink` (the function-preserving
// transform of tests/test_outliers.cpp makes exactly such columns); some rows all zero.
std::vector<float> random_weight(Rng& r, int64_t N, int64_t K, const std::vector<int32_t>& small, float shrink,
                                 bool zero_rows) {
  std::vector<float> w(size_t(N * K));
  for (float& x : w) x = float(r.normal() * 0.05);
  for (int64_t n = 0; n < N; ++n)
    for (int32_t c : small) w[size_t(n * K + c)] /= shrink;
  if (zero_rows && N > 2) std::fill(w.begin() + 2 * K, w.begin() + 3 * K, 0.f);
  return w;
}

// Random activations (|x| < 4) with outliers of magnitude ~`big` planted in `cols` (in about
// half the rows); one all-zero row when M > 3.
std::vector<float> random_input(Rng& r, int64_t M, int64_t K, const std::vector<int32_t>& cols, float big) {
  std::vector<float> x(size_t(M * K));
  for (float& v : x) v = float(std::clamp(r.normal(), -3.9, 3.9));
  for (int64_t m = 0; m < M; ++m)
    for (int32_t c : cols)
      if (m == 0 || r.chance(0.5)) x[size_t(m * K + c)] = float((r.chance(0.5) ? 1 : -1) * big * r.uniform(0.5, 1.5));
  if (M > 3) std::fill(x.begin() + 3 * K, x.begin() + 4 * K, 0.f);
  return x;
}

std::vector<std::unique_ptr<Backend>> host_backends() {
  std::vector<std::unique_ptr<Backend>> b;
  for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx2, cpu::Isa::Avx512Vnni, cpu::Isa::Amx})
    if (cpu::isa_supported(isa))
      for (int t : {1, 3}) b.push_back(cpu::make_cpu_backend_isa(t, isa));
  return b;
}

HostArray run(Backend& b, const Int8Weight& W, const HostArray& X, int64_t M, float th, const float* bias) {
  HostArray Y(X.type(), size_t(M * W.out_features));
  b.int8_linear(W, X.type(), X.data(), M, th, bias, Y.data());
  return Y;
}

TEST(KeptColumnsBackend, EveryHostBackendMatchesTheReferenceBitForBit) {
  const auto ref = make_reference_backend();
  const auto backends = host_backends();
  ASSERT_FALSE(backends.empty());
  Rng r(2026);
  struct Shape { int64_t M, N, K; };
  for (const Shape s : {Shape{1, 5, 67}, Shape{0, 8, 64}, Shape{3, 33, 130}, Shape{7, 70, 200}, Shape{40, 97, 515},
                        Shape{1, 130, 1000}}) {
    // Outliers planted in 4 columns; kept: two of them, plus two columns that are never outliers.
    const std::vector<int32_t> outl = {1, int32_t(s.K / 3), int32_t(s.K / 2), int32_t(s.K - 1)};
    HostWeight W(random_weight(r, s.N, s.K, outl, 40.f, true), s.N, s.K);
    W.keep({0, outl[1], int32_t(s.K / 2 + 1), outl[3]});
    std::vector<float> bias(size_t(s.N));
    for (float& b : bias) b = float(r.normal());
    const std::vector<float> x = random_input(r, s.M, s.K, outl, 30.f);
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      for (float th : {6.f, 0.f}) {
        SCOPED_TRACE(testing::Message() << "M=" << s.M << " N=" << s.N << " K=" << s.K << " "
                                        << testutil::dtype_label(t) << " threshold " << th);
        const HostArray X(t, x);
        const HostArray want = run(*ref, W.view(), X, s.M, th, bias.data());
        for (const auto& b : backends) {
          const HostArray got = run(*b, W.view(), X, s.M, th, bias.data());
          EXPECT_TRUE(same_bytes(got, want)) << b->name();
        }
      }
    }
  }
}

TEST(KeptColumnsBackend, KeptColumnsThatAreNoOutliersChangeNothing) {
  const auto ref = make_reference_backend();
  auto backends = host_backends();
  backends.push_back(make_reference_backend());
  Rng r(7);
  const int64_t M = 9, N = 45, K = 131;
  HostWeight W(random_weight(r, N, K, {5, 60}, 40.f, true), N, K);
  W.keep({5, 60, 130});
  // Inputs below the threshold: no outlier column at all.
  const std::vector<float> x = random_input(r, M, K, {}, 0.f);
  // Outliers in columns 7 and 8, which are not kept: the dequantized int8 columns, as before.
  const std::vector<float> x2 = random_input(r, M, K, {7, 8}, 20.f);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    SCOPED_TRACE(testutil::dtype_label(t));
    for (const auto& b : backends) {
      for (const auto* xs : {&x, &x2}) {
        const HostArray X(t, *xs);
        const HostArray with = run(*b, W.view(true), X, M, 6.f, nullptr);
        const HostArray without = run(*b, W.view(false), X, M, 6.f, nullptr);
        EXPECT_TRUE(same_bytes(with, without)) << b->name();
      }
      // Outliers in the kept columns but threshold 0 (no decomposition): nothing changes either.
      const HostArray X(t, random_input(r, M, K, {5, 60}, 20.f));
      const HostArray with = run(*b, W.view(true), X, M, 0.f, nullptr);
      const HostArray without = run(*b, W.view(false), X, M, 0.f, nullptr);
      EXPECT_TRUE(same_bytes(with, without)) << b->name();
    }
  }
}

// RMS error of y against the float64 product of X and the fp16 weight.
double rms_error(const HostArray& Y, const std::vector<double>& y64) {
  double s = 0;
  for (size_t i = 0; i < y64.size(); ++i) s += (double(Y.get(i)) - y64[i]) * (double(Y.get(i)) - y64[i]);
  return std::sqrt(s / double(y64.size()));
}

TEST(KeptColumnsBackend, KeepingEveryOutlierColumnCutsTheErrorAgainstFloat64) {
  // The transformed model's situation: outlier activations ~40x larger in a few columns whose
  // weights are ~40x smaller than the rest of their rows, so their int8 weights keep ~1 level.
  const auto cpu = make_cpu_backend(2);
  Rng r(11);
  const int64_t M = 32, N = 128, K = 256;
  const std::vector<int32_t> outl = {3, 17, 42, 200};
  HostWeight W(random_weight(r, N, K, outl, 40.f, false), N, K);
  W.keep(outl);
  const std::vector<float> x = random_input(r, M, K, outl, 40.f);
  // The same rows with only the outlier columns (the rest zero): the 16-bit part alone.
  std::vector<float> x_outl(x.size(), 0.f);
  for (int64_t m = 0; m < M; ++m)
    for (int32_t c : outl) x_outl[size_t(m * K + c)] = x[size_t(m * K + c)];
  for (DType t : {DType::F32, DType::F16}) {
    SCOPED_TRACE(testutil::dtype_label(t));
    double ratio[2] = {0, 0};
    for (int part = 0; part < 2; ++part) {
      const HostArray X(t, part == 0 ? x : x_outl);
      const std::vector<double> y64 = testutil::matmul_f64(X.to_floats(), W.w16, nullptr, M, N, K);
      const double e_t0 = rms_error(run(*cpu, W.view(false), X, M, 0.f, nullptr), y64);
      const double e_dq = rms_error(run(*cpu, W.view(false), X, M, 6.f, nullptr), y64);
      const double e_kept = rms_error(run(*cpu, W.view(true), X, M, 6.f, nullptr), y64);
      ratio[part] = e_dq / e_kept;
      std::printf("[          ] %s %s: RMS error vs float64: int8 t=0 %.3g, t=6 dequantized %.3g, t=6 kept %.3g (%.3gx)\n",
                  testutil::dtype_label(t), part == 0 ? "whole product   " : "outlier columns", e_t0, e_dq, e_kept,
                  ratio[part]);
      if (part == 0) {
        EXPECT_LT(e_dq, e_t0);
      }
    }
    // Measured (this seed, F32 and F16): whole product 2.7x (what remains is the int8 error of the
    // other 252 columns, the same with or without kept columns); the 16-bit part alone 1.3e3x in
    // F16 (the io dtype's own rounding remains) and 5e6x in F32 (float rounding only).
    EXPECT_GT(ratio[0], 2.0);
    EXPECT_GT(ratio[1], t == DType::F32 ? 1e5 : 200.0);
  }
}

TEST(KeptColumnsBackend, MalformedKeptColumnsAreRefused) {
  const auto cpu = make_cpu_backend(1);
  HostWeight W(std::vector<float>(4 * 8, 0.5f), 4, 8);
  Int8Weight w = W.view();
  w.n_kept = 2;  // no pointers
  const HostArray X(DType::F32, std::vector<float>(8, 1.f));
  HostArray Y(DType::F32, 4);
  EXPECT_THROW(cpu->int8_linear(w, DType::F32, X.data(), 1, 6.f, nullptr, Y.data()), Error);
}

// ---------------------------------------------------------------------------------------------
// Model level, on the tiny Llama fixture converted to fp16 (so that at-load and saved hold the
// same 16-bit values everywhere).

const fs::path kFixtures = fs::path(LLMINT8_SOURCE_DIR) / "tests/fixtures";

// Under a directory of this process's own (mkdtemp; removed at exit): ctest -j runs the tests of
// this file at once in separate processes, which must not share (and remove) each other's files.
fs::path fresh_dir(const std::string& name) {
  static const test::TempDir root;
  const fs::path d = root.dir() / name;
  fs::remove_all(d);
  return d;
}

// Rewrites every tensor of `src` through `edit` (which may change name, dtype, shape and bytes,
// or drop a tensor by clearing its name) into `dst`, a copy of `src` otherwise.
struct RawTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void rewrite(const fs::path& src, const fs::path& dst, const std::function<void(RawTensor&)>& edit) {
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src))
    if (e.path().extension() != ".safetensors") fs::copy_file(e.path(), dst / e.path().filename());
  auto ck = io::Checkpoint::open(src.string());
  std::vector<RawTensor> ts;
  for (const auto& n : ck->names()) {
    const io::TensorInfo& t = ck->get(n);
    RawTensor r{n, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)};
    edit(r);
    if (!r.name.empty()) ts.push_back(std::move(r));
  }
  io::SafetensorsWriter w((dst / "model.safetensors").string(), {{"format", "pt"}});
  for (const auto& t : ts) w.add(t.name, t.dtype, t.shape);
  for (const auto& t : ts) w.write(t.name, t.bytes.data());
  w.commit();
}

fs::path fp16_llama() {
  const fs::path d = fresh_dir("llama-f16");
  rewrite(kFixtures / "llama", d, [](RawTensor& t) {
    if (t.dtype != DType::F32) return;
    std::vector<uint8_t> h(t.bytes.size() / 2);
    for (size_t i = 0; i < h.size() / 2; ++i) {
      float f;
      std::memcpy(&f, &t.bytes[i * 4], 4);
      const uint16_t b = to_f16(f).bits;
      std::memcpy(&h[i * 2], &b, 2);
    }
    t.bytes = std::move(h);
    t.dtype = DType::F16;
  });
  return d;
}

// Kept columns for every quantized Linear: 0, 3 and the last input.
std::map<std::string, std::vector<int32_t>> some_columns(const Model& m) {
  std::map<std::string, std::vector<int32_t>> k;
  for (const auto& name : m.info().quantized_modules) {
    const Int8Weight* w = model::find_int8_weight(m, name);
    k[name] = {0, 3, int32_t(w->in_features - 1)};
  }
  return k;
}

std::vector<float> logits_of(Model& m) {
  const std::vector<int32_t> ids = {1, 17, 42, 99, 3, 64, 127, 5, 88, 23};
  std::vector<float> out;
  m.new_session()->forward(ids, &out, true);
  return out;
}

constexpr float kLowThreshold = 0.5f;  // the tiny random fixture has small activations

TEST(KeptColumnsModel, SavedCheckpointLoadsTheSameKeptColumnsAndLogits) {
  const fs::path f16 = fp16_llama(), out = fresh_dir("llama-kept-int8");
  LoadOptions lo;
  lo.threshold = kLowThreshold;
  lo.threads = 2;
  const auto cols = some_columns(*Model::load(f16.string(), lo));
  LoadOptions lk = lo;
  lk.kept_columns = cols;
  auto at_load = Model::load(f16.string(), lk);
  auto plain = Model::load(f16.string(), lo);
  EXPECT_EQ(at_load->info().kept_columns, int64_t(3 * cols.size()));
  EXPECT_GT(at_load->info().weight_bytes, plain->info().weight_bytes);

  model::QuantizeOptions qo;
  qo.threshold = kLowThreshold;
  qo.kept_columns = cols;
  const auto r = model::quantize_checkpoint(f16.string(), out.string(), qo);
  EXPECT_EQ(r.plan.kept_columns, int64_t(3 * cols.size()));
  auto ck = io::Checkpoint::open(out.string());
  const std::string p = "model.layers.0.self_attn.q_proj";
  EXPECT_EQ(ck->get(p + ".kept_columns").dtype, DType::I32);
  EXPECT_EQ(ck->get(p + ".kept_weight").dtype, DType::F16);
  EXPECT_EQ(ck->get(p + ".kept_weight").shape[1], 3);
  ck.reset();
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_FALSE(cfg["quantization_config"].contains("llmint8_kept_columns"));  // nothing for transformers to trip on

  LoadOptions ls;
  ls.threads = 2;
  auto saved = Model::load(out.string(), ls);
  EXPECT_EQ(saved->info().threshold, kLowThreshold);
  EXPECT_EQ(saved->info().kept_columns, at_load->info().kept_columns);
  for (const auto& [m, c] : cols) {
    const Int8Weight* a = model::find_int8_weight(*at_load, m);
    const Int8Weight* b = model::find_int8_weight(*saved, m);
    ASSERT_TRUE(a && b) << m;
    ASSERT_EQ(a->n_kept, 3);
    ASSERT_EQ(b->n_kept, 3);
    EXPECT_EQ(0, std::memcmp(a->kept_cols, b->kept_cols, 3 * 4)) << m;
    EXPECT_EQ(0, std::memcmp(a->kept_w, b->kept_w, size_t(a->out_features) * 3 * 2)) << m;
    EXPECT_EQ(std::vector<int32_t>(a->kept_cols, a->kept_cols + 3), c) << m;
  }
  const auto la = logits_of(*at_load), lb = logits_of(*saved), lp = logits_of(*plain);
  ASSERT_EQ(la.size(), lb.size());
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * 4)) << "logits differ";
  // And the kept columns did take part: the plain int8 logits differ.
  EXPECT_NE(0, std::memcmp(la.data(), lp.data(), la.size() * 4));

  // Float precisions ignore kept columns; an 8-bit checkpoint refuses new ones; unknown names.
  LoadOptions lf = lk;
  lf.precision = Precision::F32;
  EXPECT_EQ(Model::load(f16.string(), lf)->info().kept_columns, 0);
  LoadOptions lq = ls;
  lq.kept_columns = cols;
  EXPECT_THROW(Model::load(out.string(), lq), Error);
  LoadOptions lu = lo;
  lu.kept_columns = {{"model.layers.0.self_attn.nope", {1}}};
  EXPECT_THROW(Model::load(f16.string(), lu), Error);
  lu.kept_columns = {{p, {3, 1}}};  // not ascending
  EXPECT_THROW(Model::load(f16.string(), lu), Error);
  lu.kept_columns = {{p, {1, 100000}}};
  EXPECT_THROW(Model::load(f16.string(), lu), Error);
  model::QuantizeOptions bad = qo;
  bad.kept_columns = {{p, {2, 2}}};
  EXPECT_THROW(model::quantize_checkpoint(f16.string(), fresh_dir("bad").string(), bad), Error);
}

TEST(KeptColumnsModel, MalformedKeptTensorsAreRefusedWithOneLine) {
  const fs::path f16 = fp16_llama(), good = fresh_dir("good");
  model::QuantizeOptions qo;
  qo.kept_columns = {{"model.layers.1.mlp.up_proj", {2, 5, 9}}};
  model::quantize_checkpoint(f16.string(), good.string(), qo);
  ASSERT_EQ(Model::load(good.string())->info().kept_columns, 3);
  const std::string p = "model.layers.1.mlp.up_proj";
  const auto expect_error = [&](const std::string& name, const std::function<void(RawTensor&)>& edit,
                                const std::string& needle) {
    SCOPED_TRACE(name);
    const fs::path d = fresh_dir(name);
    rewrite(good, d, edit);
    try {
      Model::load(d.string());
      ADD_FAILURE() << "loaded";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  };
  const auto set_i32 = [](RawTensor& t, std::vector<int32_t> v) {
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    t.shape = {int64_t(v.size())};
  };
  expect_error("unsorted", [&](RawTensor& t) { if (t.name == p + ".kept_columns") set_i32(t, {5, 2, 9}); },
               "ascending");
  expect_error("duplicate", [&](RawTensor& t) { if (t.name == p + ".kept_columns") set_i32(t, {2, 2, 9}); },
               "ascending");
  expect_error("out-of-range", [&](RawTensor& t) { if (t.name == p + ".kept_columns") set_i32(t, {2, 5, 1 << 30}); },
               "ascending");
  expect_error("negative", [&](RawTensor& t) { if (t.name == p + ".kept_columns") set_i32(t, {-1, 5, 9}); },
               "ascending");
  expect_error("fewer-indices", [&](RawTensor& t) { if (t.name == p + ".kept_columns") set_i32(t, {2, 5}); },
               p + ".kept_weight");
  expect_error("too-many-indices", [&](RawTensor& t) {
    if (t.name != p + ".kept_columns") return;
    std::vector<int32_t> v(100000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = int32_t(i);
    set_i32(t, v);
  }, "expected I32");
  expect_error("dtype", [&](RawTensor& t) { if (t.name == p + ".kept_columns") { t.dtype = DType::F32; } },
               "expected I32");
  expect_error("weight-dtype", [&](RawTensor& t) { if (t.name == p + ".kept_weight") t.dtype = DType::BF16; },
               "expected F16");
  expect_error("weight-shape", [&](RawTensor& t) {
    if (t.name == p + ".kept_weight") t.shape = {t.shape[1], t.shape[0]};
  }, "expected F16");
  expect_error("no-weight", [&](RawTensor& t) { if (t.name == p + ".kept_weight") t.name.clear(); },
               "kept_weight beside it");
  expect_error("no-columns", [&](RawTensor& t) { if (t.name == p + ".kept_columns") t.name.clear(); },
               "kept_columns beside it");
}

TEST(KeptColumnsModel, CalibrationFindsTheColumnsThatReachTheThreshold) {
  const fs::path dir = kFixtures / "llama";
  LoadOptions lo;
  lo.threshold = kLowThreshold;
  lo.threads = 2;
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 37 + 1) % 128);
  // What the decomposition sees: the columns of each quantized Linear's input with |x| >= t.
  std::map<std::string, std::set<int32_t>> seen;
  LoadOptions lobs = lo;
  lobs.activation_observer = [&](const std::string& m, const float* X, int64_t M, int64_t K) {
    for (int64_t i = 0; i < M * K; ++i)
      if (std::fabs(X[i]) >= kLowThreshold) seen[m].insert(int32_t(i % K));
  };
  {
    auto m = Model::load(dir.string(), lobs);
    // The calibration runs windows of the model's context; 40 tokens fit one.
    ASSERT_GE(m->max_context(), 40);
    m->new_session()->forward(ids, nullptr);
  }
  CalibrationOptions co;
  co.max_kept_columns = 1000;
  const auto all = calibrate_kept_columns(dir.string(), lo, ids, co);
  ASSERT_FALSE(all.empty());
  for (const auto& [m, s] : seen) {
    ASSERT_TRUE(all.count(m)) << m;
    EXPECT_EQ(std::vector<int32_t>(s.begin(), s.end()), all.at(m)) << m;
  }
  EXPECT_EQ(all.size(), seen.size());
  // A cap keeps a subset, ascending.
  co.max_kept_columns = 2;
  for (const auto& [m, c] : calibrate_kept_columns(dir.string(), lo, ids, co)) {
    EXPECT_LE(c.size(), 2u) << m;
    EXPECT_TRUE(std::is_sorted(c.begin(), c.end())) << m;
    for (int32_t k : c) EXPECT_TRUE(seen[m].count(k)) << m;
  }
  // Skipped modules are not calibrated; threshold 0 and empty input are refused.
  LoadOptions ls = lo;
  ls.skip_modules = {"mlp"};
  for (const auto& [m, c] : calibrate_kept_columns(dir.string(), ls, ids, co)) EXPECT_EQ(m.find("mlp"), std::string::npos);
  LoadOptions l0 = lo;
  l0.threshold = 0.f;
  EXPECT_THROW(calibrate_kept_columns(dir.string(), l0, ids, co), Error);
  EXPECT_THROW(calibrate_kept_columns(dir.string(), lo, {}, co), Error);
  // An 8-bit checkpoint has no 16-bit weights to keep.
  EXPECT_THROW(calibrate_kept_columns((kFixtures / "llama-int8-hf").string(), lo, ids, co), Error);
}

}  // namespace
