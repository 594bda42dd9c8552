// The reference backend: HostBackend plumbing around the scalar functions of reference.h.
#include "quant/host_backend.h"
#include "quant/reference.h"

namespace llmint8 {
namespace {

class ReferenceBackend final : public HostBackend {
 public:
  std::string name() const override { return "reference"; }
  void gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t* A, const int8_t* B,
                    int32_t* C) override {
    ref::gemm_s8s8s32(M, N, K, A, B, C);
  }

 protected:
#define LLMINT8_REF_HOOKS(T)                                                                      \
  void quantize_rowwise_t(const T* X, int64_t M, int64_t K, float th, int8_t* Q, float* amax,    \
                          uint8_t* oc) override {                                                 \
    ref::quantize_rowwise(X, M, K, th, Q, amax, oc);                                              \
  }                                                                                               \
  void dequantize_t(int64_t M, int64_t N, const int32_t* C, const float* ax, const float* aw,     \
                    const float* bias, T* Y) override {                                           \
    ref::dequantize(M, N, C, ax, aw, bias, Y);                                                    \
  }                                                                                               \
  void int8_linear_t(const Int8Weight& W, const T* X, int64_t M, float th, const float* bias,     \
                     T* Y) override {                                                             \
    ref::int8_linear(W, X, M, th, bias, Y);                                                       \
  }
  LLMINT8_REF_HOOKS(float)
  LLMINT8_REF_HOOKS(f16)
  LLMINT8_REF_HOOKS(bf16)
#undef LLMINT8_REF_HOOKS
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace llmint8
