// The reference outputs that tools/make_fixtures.py stores beside each tiny family fixture
// (tests/fixtures/<family>/reference.safetensors, written by transformers): the input ids, the
// greedy continuation and the float32 logits of every input position. Shared by the CPU and GPU
// model tests.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace llmint8::test {

struct FixtureRef {
  std::vector<int32_t> input_ids, greedy_ids;
  std::vector<float> logits;  // [input positions, vocab]
};

// Reads dir/reference.safetensors; a missing or mistyped tensor is a test failure (and empty).
inline FixtureRef read_fixture_ref(const std::string& dir) {
  io::SafetensorsFile f(dir + "/reference.safetensors");
  FixtureRef r;
  auto ids = [&](const char* name) {
    const io::TensorInfo* t = f.find(name);
    EXPECT_TRUE(t && t->dtype == DType::I64) << name;
    std::vector<int32_t> out;
    if (!t || t->dtype != DType::I64) return out;
    for (int64_t i = 0; i < t->numel(); ++i) {
      int64_t v;
      std::memcpy(&v, t->data + 8 * i, 8);
      out.push_back(int32_t(v));
    }
    return out;
  };
  r.input_ids = ids("input_ids");
  r.greedy_ids = ids("greedy_ids");
  const io::TensorInfo* l = f.find("logits");
  EXPECT_TRUE(l && l->dtype == DType::F32);
  if (l && l->dtype == DType::F32) {
    r.logits.resize(size_t(l->numel()));
    std::memcpy(r.logits.data(), l->data, l->nbytes);
  }
  return r;
}

}  // namespace llmint8::test
