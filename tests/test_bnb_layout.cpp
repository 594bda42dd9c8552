// Weight quantization against an independent writer: tests/fixtures/llama-int8-hf holds the llama
// fixture's Linear weights converted in PyTorch by bitsandbytes' default-backend formula
// (tools/make_fixtures.py). Every backend must reproduce CB and SCB bit for bit from the fp32
// checkpoint cast to fp16, including the rare exact .5 ties where (1/SCB)*127 and a correctly
// rounded 127/SCB disagree.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "llmint8/backend.h"
#include "llmint8/dtype.h"

namespace {

using namespace llmint8;

const std::string kFixtures = std::string(LLMINT8_SOURCE_DIR) + "/tests/fixtures";

struct Quantized {
  std::vector<int8_t> cb;
  std::vector<float> scb;
};

Quantized quantize_on(Backend& be, const std::vector<f16>& w, int64_t N, int64_t K) {
  void* dx = be.alloc(w.size() * sizeof(f16));
  auto* dq = static_cast<int8_t*>(be.alloc(size_t(N * K)));
  auto* ds = static_cast<float*>(be.alloc(size_t(N) * sizeof(float)));
  be.to_device(dx, w.data(), w.size() * sizeof(f16));
  be.quantize_rowwise(DType::F16, dx, N, K, 0.f, dq, ds, nullptr);
  Quantized r{std::vector<int8_t>(size_t(N * K)), std::vector<float>(size_t(N))};
  be.to_host(r.cb.data(), dq, r.cb.size());
  be.to_host(r.scb.data(), ds, r.scb.size() * sizeof(float));
  be.synchronize();
  be.release(dx); be.release(dq); be.release(ds);
  return r;
}

TEST(BitsandbytesLayout, QuantizingTheFixtureReproducesTheIndependentWriterBitForBit) {
  auto src = io::Checkpoint::open(kFixtures + "/llama");
  auto dst = io::Checkpoint::open(kFixtures + "/llama-int8-hf");
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(make_reference_backend());
  backends.push_back(make_cpu_backend(2));
  if (auto cuda = make_cuda_backend()) backends.push_back(std::move(cuda));

  int linears = 0;
  int64_t values = 0;
  for (const std::string& name : dst->names()) {
    const std::string suffix = ".SCB";
    if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix)) continue;
    const std::string prefix = name.substr(0, name.size() - suffix.size());
    const io::TensorInfo& cb = dst->get(prefix + ".weight");
    const io::TensorInfo& scb = dst->get(name);
    const io::TensorInfo& fmt = dst->get(prefix + ".weight_format");
    ASSERT_EQ(cb.dtype, DType::I8) << prefix;
    ASSERT_EQ(scb.dtype, DType::F32) << prefix;
    ASSERT_EQ(fmt.dtype, DType::U8) << prefix;
    ASSERT_TRUE(fmt.shape.empty()) << prefix;
    ASSERT_EQ(fmt.data[0], 0) << prefix;
    const int64_t N = cb.shape.at(0), K = cb.shape.at(1);
    const io::TensorInfo& w32 = src->get(prefix + ".weight", {N, K});
    std::vector<float> wf(size_t(N * K));
    io::Checkpoint::read_f32(w32, wf.data());
    std::vector<f16> wh(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) wh[i] = to_f16(wf[i]);
    for (auto& be : backends) {
      const Quantized q = quantize_on(*be, wh, N, K);
      EXPECT_EQ(0, std::memcmp(q.scb.data(), scb.data, scb.nbytes)) << be->name() << " SCB of " << prefix;
      int64_t diff = 0;
      for (int64_t i = 0; i < N * K; ++i) diff += q.cb[size_t(i)] != int8_t(cb.data[i]);
      EXPECT_EQ(diff, 0) << be->name() << ": " << diff << " int8 values differ in " << prefix;
    }
    ++linears;
    values += N * K;
  }
  EXPECT_EQ(linears, 14);  // 2 layers x (q, k, v, o, gate, up, down)
  EXPECT_EQ(values, 73728);
}

}  // namespace
