// Model::load and the precision names of include/llmint8/model.h.
#include "llmint8/model.h"

#include <algorithm>

#include "llmint8/error.h"

#include "cuda/cuda_model.h"
#include "model/transformer.h"

namespace llmint8 {

std::string_view precision_name(Precision p) {
  switch (p) {
    case Precision::Int8: return "int8";
    case Precision::F16: return "fp16";
    case Precision::BF16: return "bf16";
    case Precision::F32: return "fp32";
  }
  return "?";
}

bool parse_precision(std::string_view s, Precision* out) {
  for (Precision p : {Precision::Int8, Precision::F16, Precision::BF16, Precision::F32})
    if (s == precision_name(p)) {
      if (out) *out = p;
      return true;
    }
  return false;
}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opts) {
  // "cuda" / "cuda:N": the GPU model (src/cuda/cuda_model.h), which reuses the CPU loader.
  if (opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0) return cuda::load_cuda_model(dir, opts);
  return model::load_transformer(dir, opts);
}

namespace {

// Model::new_batch_session's default: one Session per sequence, stepped one after another.
class SequentialBatchSession final : public BatchSession {
 public:
  SequentialBatchSession(Model& m, int64_t batch, int64_t max_tokens)
      : vocab_(m.vocab_size()), capacity_(max_tokens > 0 ? max_tokens : m.max_context()) {
    for (int64_t b = 0; b < batch; ++b) seqs_.push_back(m.new_session(max_tokens));
  }
  int64_t batch_size() const override { return int64_t(seqs_.size()); }
  void forward(int64_t b, std::span<const int32_t> tokens, std::vector<float>* logits) override {
    seq(b).forward(tokens, logits);
  }
  void step(std::span<const int32_t> tokens, std::vector<float>* logits) override {
    if (tokens.size() != seqs_.size())
      throw Error("batch step: " + std::to_string(tokens.size()) + " tokens given for " +
                  std::to_string(seqs_.size()) + " sequences");
    // Checked before any sequence runs, so that a refused step changes nothing.
    for (size_t b = 0; b < seqs_.size(); ++b) {
      if (tokens[b] < 0 || tokens[b] >= vocab_)
        throw Error("batch step: token id " + std::to_string(tokens[b]) + " out of range [0, " +
                    std::to_string(vocab_) + ")");
      if (seqs_[b]->position() + 1 > capacity_)
        throw Error("batch step: sequence " + std::to_string(b) + " is full (" + std::to_string(capacity_) +
                    " tokens)");
    }
    std::vector<float> one;
    if (logits) logits->resize(seqs_.size() * size_t(vocab_));
    for (size_t b = 0; b < seqs_.size(); ++b) {
      seqs_[b]->forward(tokens.subspan(b, 1), logits ? &one : nullptr);
      if (logits) std::copy(one.begin(), one.end(), logits->begin() + std::ptrdiff_t(b * size_t(vocab_)));
    }
  }
  int64_t position(int64_t b) const override { return seq(b).position(); }
  void reset() override {
    for (auto& s : seqs_) s->reset();
  }

 private:
  Session& seq(int64_t b) const {
    if (b < 0 || b >= int64_t(seqs_.size()))
      throw Error("batch session: sequence " + std::to_string(b) + " out of range [0, " +
                  std::to_string(seqs_.size()) + ")");
    return *seqs_[size_t(b)];
  }
  int64_t vocab_, capacity_;
  std::vector<std::unique_ptr<Session>> seqs_;
};

}  // namespace

std::unique_ptr<BatchSession> Model::new_batch_session(int64_t batch, int64_t max_tokens) {
  if (batch <= 0) throw Error("new_batch_session: batch must be >= 1, got " + std::to_string(batch));
  return std::make_unique<SequentialBatchSession>(*this, batch, max_tokens);
}

}  // namespace llmint8
