// safetensors reader/writer: round trips, the real stories260K checkpoint, sharded checkpoints,
// and malformed files (every one must throw llmint8::Error naming the file and the problem).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "llmint8/error.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using namespace llmint8;
using namespace llmint8::io;

namespace {

using Safetensors = test::TempDirTest;
using test::read_file;
using test::write_file;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(n >> (8 * i)));
  return s;
}

// A raw safetensors file: header length, the header text as given, the data bytes.
std::string raw_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Expects opening `p` to throw Error whose message names the file and contains `problem`.
void expect_bad_file(const std::string& p, const std::string& problem) {
  try {
    SafetensorsFile f(p);
    ADD_FAILURE() << p << ": opened without error, expected '" << problem << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
  }
}

void expect_bad_checkpoint(const std::string& dir, const std::string& names,
                           const std::string& problem) {
  try {
    Checkpoint::open(dir);
    ADD_FAILURE() << dir << ": opened without error, expected '" << problem << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(names), std::string::npos) << "message does not name " << names << ": " << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
  }
}

// Deterministic non-trivial bytes.
std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = uint8_t(x);
  }
  return v;
}

}  // namespace

// ---- round trips ----------------------------------------------------------------------------

TEST_F(Safetensors, RoundTripEveryDtypeScalarAndEmpty) {
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {
      {"f32", DType::F32, {3, 5}},  {"f16", DType::F16, {7}},      {"bf16", DType::BF16, {2, 3, 2}},
      {"i8", DType::I8, {9, 1}},    {"u8", DType::U8, {13}},       {"i32", DType::I32, {2, 2}},
      {"i64", DType::I64, {3}},     {"f64", DType::F64, {1, 2}},   {"bool", DType::BOOL, {5}},
      {"scalar", DType::F32, {}},   {"empty", DType::F16, {0, 3}}, {"empty2", DType::I8, {4, 0}},
      {"last", DType::U8, {1}},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\u00e9llo \"q\""}};
  const std::string p = path("model.safetensors");
  std::vector<std::vector<uint8_t>> payload;
  {
    SafetensorsWriter w(p, meta);
    for (size_t i = 0; i < specs.size(); ++i) {
      const size_t n = w.add(specs[i].name, specs[i].dtype, specs[i].shape);
      size_t want = dtype_size(specs[i].dtype);
      for (int64_t d : specs[i].shape) want *= size_t(d);
      EXPECT_EQ(n, want) << specs[i].name;
      payload.push_back(pattern(n, uint32_t(i)));
    }
    for (size_t i = 0; i < specs.size(); ++i) w.write(specs[i].name, payload[i].data());
    EXPECT_FALSE(fs::exists(p)) << "final path must appear only on commit";
    w.commit();
  }
  EXPECT_EQ(listing(), std::set<std::string>{"model.safetensors"});

  // Layout: header length a multiple of 8 (data area 8-aligned), space padded, data back to back.
  const std::string bytes = read_file(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  size_t total = 0;
  for (const auto& v : payload) total += v.size();
  EXPECT_EQ(bytes.size(), 8 + n + total);

  SafetensorsFile f(p);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo* t = f.find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    EXPECT_EQ(t->nbytes, payload[i].size());
    EXPECT_EQ(*t->file, p);
    if (t->nbytes) {  // memcmp must not see the null data() of an empty vector
      EXPECT_EQ(std::memcmp(t->data, payload[i].data(), t->nbytes), 0) << specs[i].name;
    }
  }
  EXPECT_EQ(f.find("scalar")->numel(), 1);
  EXPECT_EQ(f.find("scalar")->shape_str(), "[]");
  EXPECT_EQ(f.find("empty")->numel(), 0);
  EXPECT_EQ(f.find("f32")->shape_str(), "[3, 5]");
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST_F(Safetensors, NoTensorsRoundTrip) {
  const std::string p = path("empty.safetensors");
  SafetensorsWriter w(p);
  w.commit();
  SafetensorsFile f(p);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
}

TEST_F(Safetensors, ReadF32ConvertsHalfTypes) {
  // Bit patterns with known values (not derived from the converter under test).
  const uint16_t h[] = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00};
  const float hv[] = {1.0f, -2.5f, 65504.0f, 5.9604644775390625e-08f, -0.0f, INFINITY};
  const uint16_t b[] = {0x3F80, 0xC020, 0x4049, 0xFF80};
  const float bv[] = {1.0f, -2.5f, 3.140625f, -INFINITY};
  const float f[] = {0.25f, -7.0f, 1e30f};
  const int8_t q[] = {1, -2};
  const std::string p = path("model.safetensors");
  {
    SafetensorsWriter w(p);
    w.add("h", DType::F16, {6});
    w.add("b", DType::BF16, {2, 2});
    w.add("f", DType::F32, {3});
    w.add("q", DType::I8, {2});
    w.write("h", h);
    w.write("b", b);
    w.write("f", f);
    w.write("q", q);
    w.commit();
  }
  auto ck = Checkpoint::open(dir_.string());
  float out[6];
  // The conversion itself (Inf patterns included) ...
  Checkpoint::read_f32_unchecked(ck->get("h", {6}), out);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], hv[i]) << i;
  EXPECT_TRUE(std::signbit(out[4]));
  Checkpoint::read_f32_unchecked(ck->get("b", {2, 2}), out);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], bv[i]) << i;
  // ... and the checked read, which refuses non-finite weights naming the tensor and element.
  for (const char* name : {"h", "b"}) {
    try {
      Checkpoint::read_f32(ck->get(name), out);
      ADD_FAILURE() << name << ": Inf accepted";
    } catch (const llmint8::Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("tensor '") + name + "': holds Inf at element"),
                std::string::npos) << e.what();
    }
  }
  Checkpoint::read_f32(ck->get("f"), out);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i], f[i]) << i;
  try {
    Checkpoint::read_f32(ck->get("q"), out);
    ADD_FAILURE() << "I8 read as float";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'q'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("I8"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ck->largest_tensor_bytes(), 12u);
  EXPECT_EQ(ck->names(), (std::vector<std::string>{"b", "f", "h", "q"}));
}

// ---- the real checkpoint --------------------------------------------------------------------

TEST_F(Safetensors, Stories260K) {
  const std::string dir = std::string(LLMINT8_SHARED_DIR) + "/models/stories260K";
  if (!fs::exists(dir + "/model.safetensors"))
    GTEST_SKIP() << "shared data not found at " << dir << " (set LLMINT8_SHARED_DIR)";
  auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck->names().size(), 47u);  // embed + norm + 5 layers x 9
  const TensorInfo& e = ck->get("model.embed_tokens.weight", {512, 64});
  EXPECT_EQ(e.dtype, DType::F32);
  EXPECT_EQ(e.nbytes, 512u * 64u * 4u);
  EXPECT_EQ(ck->largest_tensor_bytes(), 512u * 64u * 4u);
  EXPECT_EQ(ck->get("model.layers.0.mlp.down_proj.weight").shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(ck->get("model.layers.4.self_attn.k_proj.weight").shape, (std::vector<int64_t>{32, 64}));
  std::vector<float> w(size_t(e.numel()));
  Checkpoint::read_f32(e, w.data());
  // Values read independently with Python's struct module.
  EXPECT_EQ(w[0], -0.29474878311157227f);
  EXPECT_EQ(w[1], 0.5618956089019775f);
  EXPECT_EQ(w[3], 0.34057360887527466f);
  EXPECT_EQ(w.back(), -0.424032598733902f);
  // Dropping the pages must not change what a later read sees (they fault back in from disk).
  ck->release_pages(e);
  std::vector<float> again(w.size());
  Checkpoint::read_f32(e, again.data());
  EXPECT_EQ(w, again);

  try {
    ck->get("model.embed_tokens.weight", {64, 512});
    ADD_FAILURE() << "wrong shape accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("has shape [512, 64], expected [64, 512]"),
              std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("model.safetensors"), std::string::npos);
  }
  try {
    ck->get("lm_head.weight");
    ADD_FAILURE() << "missing tensor found";
  } catch (const Error& err) {
    EXPECT_EQ(std::string(err.what()), dir + ": tensor 'lm_head.weight' not found");
  }
  SafetensorsFile f(dir + "/model.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

// ---- sharded checkpoints --------------------------------------------------------------------

namespace {
// Two shards: shard 1 holds a [4,3] F32 and b [5] BF16; shard 2 holds c [2,2] I8.
void make_shards(const std::string& dir) {
  const float a[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  const uint16_t b[5] = {0x3F80, 0x4000, 0x4040, 0x4080, 0x40A0};  // 1 2 3 4 5
  const int8_t c[4] = {-1, 2, -3, 4};
  SafetensorsWriter w1(dir + "/model-00001-of-00002.safetensors", {{"format", "pt"}});
  w1.add("a", DType::F32, {4, 3});
  w1.add("b", DType::BF16, {5});
  w1.write("a", a);
  w1.write("b", b);
  w1.commit();
  SafetensorsWriter w2(dir + "/model-00002-of-00002.safetensors", {{"format", "pt"}});
  w2.add("c", DType::I8, {2, 2});
  w2.write("c", c);
  w2.commit();
}
}  // namespace

TEST_F(Safetensors, ShardedCheckpoint) {
  make_shards(dir_.string());
  write_safetensors_index(path("model.safetensors.index.json"), 48 + 10 + 4,
                          {{"a", "model-00001-of-00002.safetensors"},
                           {"b", "model-00001-of-00002.safetensors"},
                           {"c", "model-00002-of-00002.safetensors"}});
  EXPECT_EQ(listing(), (std::set<std::string>{"model-00001-of-00002.safetensors",
                                              "model-00002-of-00002.safetensors",
                                              "model.safetensors.index.json"}));
  auto ck = Checkpoint::open(dir_.string());
  EXPECT_EQ(ck->names(), (std::vector<std::string>{"a", "b", "c"}));
  float a[12], b[5];
  Checkpoint::read_f32(ck->get("a", {4, 3}), a);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(a[i], float(i));
  Checkpoint::read_f32(ck->get("b", {5}), b);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b[i], float(i + 1));
  const TensorInfo& c = ck->get("c");
  EXPECT_EQ(*c.file, path("model-00002-of-00002.safetensors"));
  EXPECT_EQ(int8_t(c.data[2]), -3);
  EXPECT_EQ(ck->largest_tensor_bytes(), 48u);
  ck->release_pages(ck->get("a"));
  Checkpoint::read_f32(ck->get("a"), a);
  EXPECT_EQ(a[11], 11.0f);

  // The index JSON as Hugging Face writes it.
  const auto j = read_file(path("model.safetensors.index.json"));
  EXPECT_NE(j.find("\"total_size\": 62"), std::string::npos) << j;
  EXPECT_NE(j.find("\"weight_map\""), std::string::npos) << j;
}

TEST_F(Safetensors, CheckpointErrors) {
  const std::string d = dir_.string();
  expect_bad_checkpoint(d, d, "no model.safetensors or model.safetensors.index.json");
  make_shards(d);
  const std::string idx = path("model.safetensors.index.json");
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";

  write_file(idx, R"({"weight_map": {"a": ")" + s1 + R"(", "c": "missing.safetensors"}})");
  expect_bad_checkpoint(d, idx, "shard 'missing.safetensors' does not exist");
  write_file(idx, R"({"weight_map": {"a": "../)" + s1 + R"("}})");
  expect_bad_checkpoint(d, idx, "is not a plain file name");
  write_file(idx, R"({"weight_map": {"a": "/etc/passwd"}})");
  expect_bad_checkpoint(d, idx, "is not a plain file name");
  write_file(idx, R"({"weight_map": {"a": ".."}})");
  expect_bad_checkpoint(d, idx, "is not a plain file name");
  write_file(idx, R"({"weight_map": {"a": ")" + s1 + R"(", "c": ")" + s1 + R"("}})");
  expect_bad_checkpoint(d, idx, "tensor 'c' is mapped to shard '" + s1 + "' which does not contain it");
  write_file(idx, R"({"weight_map": {"a": 3}})");
  expect_bad_checkpoint(d, idx, "is not a string");
  write_file(idx, R"({"metadata": {}})");
  expect_bad_checkpoint(d, idx, "missing \"weight_map\"");
  write_file(idx, R"({"weight_map": [1]})");
  expect_bad_checkpoint(d, idx, "\"weight_map\" is not an object");
  write_file(idx, R"({"weight_map": {"a": ")");
  expect_bad_checkpoint(d, idx, "invalid JSON");
  write_file(idx, "[]");
  expect_bad_checkpoint(d, idx, "not a JSON object");

  // A tensor present in two shards.
  {
    SafetensorsWriter w(path(s2));
    const int8_t x = 1, y = 2;
    w.add("a", DType::I8, {1});
    w.add("c", DType::I8, {1});
    w.write("a", &x);
    w.write("c", &y);
    w.commit();
  }
  write_file(idx, R"({"weight_map": {"a": ")" + s1 + R"(", "c": ")" + s2 + R"("}})");
  expect_bad_checkpoint(d, path(s2), "tensor 'a' is also in");

  // A corrupt shard surfaces the shard's own error.
  write_file(path(s2), "garbage");
  expect_bad_checkpoint(d, path(s2), "shorter than the 8-byte");
}

// ---- malformed files ------------------------------------------------------------------------

TEST_F(Safetensors, MalformedHeaders) {
  const std::string p = path("bad.safetensors");
  auto bad = [&](const std::string& bytes, const std::string& problem) {
    SCOPED_TRACE(problem);
    write_file(p, bytes);
    expect_bad_file(p, problem);
  };
  const std::string d8(8, 'x');  // 8 data bytes

  expect_bad_file(path("nonexistent.safetensors"), "cannot open");
  expect_bad_file(dir_.string(), "is a directory, expected a regular file");
  bad("", "file is 0 bytes, shorter than the 8-byte header length");
  bad("abcde", "file is 5 bytes, shorter than the 8-byte header length");
  bad(le64(100) + "{}", "header length 100 exceeds the file size 10");
  bad(le64(uint64_t(1) << 62) + "{}", "header length 4611686018427387904 exceeds the file size");
  bad(le64(~uint64_t(0)) + "{}", "exceeds the file size");
  bad(le64(0), "invalid JSON header");
  bad(raw_file("{\"a\": ", ""), "invalid JSON header");
  bad(raw_file("{\"a\": {}} trailing", ""), "invalid JSON header");
  bad(raw_file(std::string("{\"a\xff\": {}}"), ""), "invalid JSON header");  // not UTF-8
  bad(raw_file("[1, 2]", ""), "header is JSON array, expected an object");
  bad(raw_file("\"str\"", ""), "header is JSON string, expected an object");
  bad(raw_file(std::string(200000, '[') + std::string(200000, ']'), ""), "nested deeper");
  bad(raw_file(R"({"a": 1})", ""), "tensor 'a': entry is not an object");
  bad(raw_file(R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': missing \"dtype\"");
  bad(raw_file(R"({"a": {"dtype": "F32", "data_offsets": [0, 8]}})", d8),
      "tensor 'a': missing \"shape\"");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [2]}})", d8),
      "tensor 'a': missing \"data_offsets\"");
  bad(raw_file(R"({"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': unknown dtype \"F7\"");
  bad(raw_file(R"({"a": {"dtype": 32, "shape": [2], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': \"dtype\" is not a string");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", d8),
      "tensor 'a': \"shape\" is not an array");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': shape entry -2 is not a non-negative 64-bit integer");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': shape entry 2.5 is not a non-negative");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", d8),
      "is not a non-negative");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 8]}})", d8),
      "is not a non-negative 64-bit integer");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': data_offsets span 8 bytes but shape [3] of F32 needs 12");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})", d8),
      "tensor 'a': data_offsets [8, 16] extend past the data area of 8 bytes");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [6, 2]}})", d8),
      "tensor 'a': data_offsets [6, 2] has begin > end");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0]}})", d8),
      "tensor 'a': \"data_offsets\" [0] is not [begin, end]");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, -4]}})", d8),
      "is not [begin, end]");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": "0,4"}})", d8),
      "is not [begin, end]");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [18446744073709551612, 18446744073709551616]}})", d8),
      "is not [begin, end]");
  // Overflow: the shape product, and the product times the dtype size.
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 8]}})", d8),
      "tensor 'a': shape [1099511627776, 1099511627776] overflows a 64-bit byte count");
  bad(raw_file(R"({"a": {"dtype": "F32", "shape": [2147483648, 2147483648, 4], "data_offsets": [0, 8]}})", d8),
      "overflows a 64-bit byte count");
  bad(raw_file(R"({"a": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 8]}})", d8),
      "overflows a 64-bit byte count");
  // A terabyte tensor on an 8-byte data area.
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [1099511627776], "data_offsets": [0, 1099511627776]}})", d8),
      "tensor 'a': data_offsets [0, 1099511627776] extend past the data area of 8 bytes");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [5], "data_offsets": [0, 5]},
                   "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", d8),
      "tensor 'b': data overlaps tensor 'a'");
  bad(raw_file(R"({"b": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                   "a": {"dtype": "U8", "shape": [2], "data_offsets": [3, 5]}})", d8),
      "overlaps tensor");
  bad(raw_file(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                   "a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", d8),
      "duplicate JSON key 'a' (tensor defined twice)");
  bad(raw_file(R"({"a": {"dtype": "U8", "dtype": "I8", "shape": [4], "data_offsets": [0, 4]}})", d8),
      "duplicate JSON key 'dtype'");
  bad(raw_file(R"({"__metadata__": {"format": 1}})", ""), "__metadata__ entry 'format' is not a string");
  bad(raw_file(R"({"__metadata__": [1]})", ""), "__metadata__ is not an object");
  bad(raw_file(R"({"": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})", d8), "empty name");
}

TEST_F(Safetensors, AcceptsEdgeCasesTheFormatAllows) {
  const std::string p = path("ok.safetensors");
  // Zero-size tensors anywhere in the data area (they occupy no bytes), a zero dimension next to
  // a huge one, unknown extra fields, and unused bytes after the last tensor.
  write_file(p, raw_file(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
      "z": {"dtype": "F32", "shape": [0, 4611686018427387904], "data_offsets": [3, 3]},
      "s": {"dtype": "U8", "shape": [], "data_offsets": [8, 9], "extra": {"x": [1]}}})",
                          "abcdefghi" + std::string(7, '\0')));
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.find("z")->nbytes, 0u);
  EXPECT_EQ(f.find("z")->numel(), 0);
  EXPECT_EQ(f.find("s")->numel(), 1);
  EXPECT_EQ(char(f.find("s")->data[0]), 'i');
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.find("a")->data), 8), "abcdefgh");
}

// Found by tests/fuzz/fuzz_safetensors: [2^62, 4, 0] is a valid empty tensor, but numel()
// multiplied left to right overflowed int64 before reaching the 0 (signed overflow: undefined;
// the sanitizer build of this test reports it).
TEST_F(Safetensors, ZeroDimensionAfterOverflowingDimensions) {
  const std::string p = path("z.safetensors");
  write_file(p, raw_file(R"({"z": {"dtype": "F32", "shape": [4611686018427387904, 4, 0], "data_offsets": [0, 0]}})", ""));
  SafetensorsFile f(p);
  EXPECT_EQ(f.find("z")->numel(), 0);
  EXPECT_EQ(f.find("z")->nbytes, 0u);
  Checkpoint::read_f32(*f.find("z"), nullptr);  // nothing to read
}

// Found by tests/fuzz/fuzz_safetensors: names come from the file and may hold "\n" (a JSON
// escape); the message must stay one line, with the control characters escaped.
TEST_F(Safetensors, ControlCharactersInNamesKeepMessagesOneLine) {
  const std::string p = path("ctl.safetensors");
  write_file(p, raw_file(R"({"a\nb\u0007": {"dtype": "F\n32", "shape": [1], "data_offsets": [0, 4]}})",
                          std::string(4, '\0')));
  expect_bad_file(p, R"(tensor 'a\nb\x07': unknown dtype "F\n32")");
}

// The validation runs on any in-memory image, not only on a mapped file: the fuzz targets use it.
TEST_F(Safetensors, ParseInMemoryImage) {
  const std::string bytes = raw_file(
      R"({"__metadata__": {"format": "pt"}, "w": {"dtype": "I8", "shape": [2, 2], "data_offsets": [0, 4]}})",
      "\x01\x02\x03\x04");
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const SafetensorsHeader h = SafetensorsFile::parse(data, bytes.size(), "mem");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].name, "w");
  EXPECT_EQ(h.tensors[0].data, data + bytes.size() - 4);
  EXPECT_EQ(h.tensors[0].file, nullptr);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    try {
      SafetensorsFile::parse(data, cut, "mem");
      ADD_FAILURE() << "image cut at " << cut << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("mem: ", 0), 0u) << e.what();
    }
  }
}

TEST_F(Safetensors, ParseIndexText) {
  const auto map = Checkpoint::parse_index(
      R"({"metadata": {"total_size": 8}, "weight_map": {"b": "s2.safetensors", "a": "s1.safetensors"}})",
      "idx.json");
  EXPECT_EQ(map, (std::vector<std::pair<std::string, std::string>>{{"a", "s1.safetensors"},
                                                                   {"b", "s2.safetensors"}}));
  auto bad = [](const std::string& text, const std::string& problem) {
    try {
      Checkpoint::parse_index(text, "idx.json");
      ADD_FAILURE() << text << ": accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("idx.json: ", 0), 0u) << msg;
      EXPECT_NE(msg.find(problem), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  };
  bad("", "invalid JSON");
  bad(R"({"weight_map": {"a": "x", "a": "y"}})", "duplicate JSON key 'a'");
  bad(R"({"weight_map": {"a": "sub/x.safetensors"}})", "is not a plain file name");
  bad(R"({"weight_map": {"a": "x\\y"}})", "is not a plain file name");
  bad(R"({"weight_map": {"a": "x\u0000y"}})", "is not a plain file name");
  bad(R"({"weight_map": {"a": "..x"}})", "is not a plain file name");
  bad(R"({"weight_map": {"a\n": "."}})", R"(tensor 'a\n': shard name '.')");
  bad(std::string(100, '['), "nested deeper");
}

TEST_F(Safetensors, HeaderOverSizeCap) {
  // A header length past the 100 MB cap inside a (sparse) file that is long enough.
  const std::string p = path("big.safetensors");
  write_file(p, le64(100'000'001) + "{}");
  fs::resize_file(p, 100'000'016);
  expect_bad_file(p, "header length 100000001 exceeds the 100000000-byte limit");
}

TEST_F(Safetensors, TruncatedFilesAllRejected) {
  const std::string good = path("good.safetensors");
  {
    SafetensorsWriter w(good, {{"format", "pt"}});
    const auto a = pattern(64, 1), b = pattern(30, 2), c = pattern(6, 3);
    w.add("a", DType::F32, {4, 4});
    w.add("b", DType::BF16, {15});
    w.add("c", DType::I8, {6});
    w.write("a", a.data());
    w.write("b", b.data());
    w.write("c", c.data());
    w.commit();
  }
  const std::string bytes = read_file(good);
  ASSERT_NO_THROW(SafetensorsFile{good});
  const std::string p = path("cut.safetensors");
  // Every cut point: inside the length, inside the header, inside each tensor.
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut) + " of " + std::to_string(bytes.size()));
    write_file(p, bytes.substr(0, cut));
    try {
      SafetensorsFile f(p);
      ADD_FAILURE() << "truncated file accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
}

// ---- the writer -----------------------------------------------------------------------------

TEST_F(Safetensors, WriterAbortLeavesNothing) {
  const std::string p = path("out.safetensors");
  const auto a = pattern(16, 1);
  {
    SafetensorsWriter w(p);
    w.add("a", DType::U8, {16});
    w.add("b", DType::U8, {16});
    w.write("a", a.data());
    EXPECT_TRUE(fs::exists(w.temp_path()));
    EXPECT_FALSE(fs::exists(p));
  }  // destroyed without commit
  EXPECT_TRUE(listing().empty());

  // An exception in the producer half way: the writer unwinds and cleans up.
  try {
    SafetensorsWriter w(p);
    w.add("a", DType::U8, {16});
    w.add("b", DType::U8, {16});
    w.write("a", a.data());
    throw std::runtime_error("producer failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(listing().empty());

  // A commit with a tensor missing is refused, and nothing is left behind.
  {
    SafetensorsWriter w(p);
    w.add("a", DType::U8, {16});
    w.add("b", DType::U8, {16});
    w.write("a", a.data());
    try {
      w.commit();
      ADD_FAILURE() << "commit with a missing tensor";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'b' not written"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(listing().empty());
}

TEST_F(Safetensors, WriterIoFailureMidwayKeepsOldFile) {
  const std::string p = path("out.safetensors");
  write_file(p, "previous contents");
  const auto big = pattern(1 << 16, 7);
  // Simulate a full disk: cap this process's file size so the second tensor's write fails (EFBIG).
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 100'000;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string message;
  {
    SafetensorsWriter w(p);
    w.add("a", DType::U8, {1 << 16});
    w.add("b", DType::U8, {1 << 16});
    try {
      w.write("a", big.data());
      w.write("b", big.data());
      w.commit();
    } catch (const Error& e) {
      message = e.what();
    }
    // After a failure the writer refuses to go on (its file is gone).
    EXPECT_THROW(w.write("b", big.data()), Error);
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find("write failed"), std::string::npos) << message;
  EXPECT_NE(message.find(".tmp-"), std::string::npos) << message;
  EXPECT_EQ(listing(), std::set<std::string>{"out.safetensors"});
  EXPECT_EQ(read_file(p), "previous contents");
}

TEST_F(Safetensors, WriterReplacesExistingFileOnCommit) {
  const std::string p = path("out.safetensors");
  write_file(p, "previous contents");
  const uint8_t x[3] = {1, 2, 3};
  SafetensorsWriter w(p);
  w.add("x", DType::U8, {3});
  w.write("x", x);
  EXPECT_EQ(read_file(p), "previous contents");
  w.commit();
  SafetensorsFile f(p);
  EXPECT_EQ(f.find("x")->data[2], 3);
  EXPECT_EQ(listing(), std::set<std::string>{"out.safetensors"});
}

TEST_F(Safetensors, WriterRejectsMisuse) {
  const std::string p = path("out.safetensors");
  const uint8_t x[4] = {};
  SafetensorsWriter w(p);
  w.add("a", DType::U8, {4});
  EXPECT_THROW(w.add("a", DType::U8, {4}), Error);
  EXPECT_THROW(w.add("", DType::U8, {4}), Error);
  EXPECT_THROW(w.add("__metadata__", DType::U8, {4}), Error);
  EXPECT_THROW(w.add("neg", DType::U8, {-1}), Error);
  EXPECT_THROW(w.add("huge", DType::F32, {int64_t(1) << 62, 4}), Error);
  w.add("b", DType::U8, {4});
  EXPECT_THROW(w.write("b", x), Error);   // out of order
  EXPECT_THROW(w.write("zz", x), Error);  // never declared
  w.write("a", x);
  EXPECT_THROW(w.add("c", DType::U8, {1}), Error);  // after writing began
  w.write("b", x);
  EXPECT_THROW(w.write("b", x), Error);  // written twice
  w.commit();
  EXPECT_THROW(w.commit(), Error);
  EXPECT_EQ(SafetensorsFile(p).tensors().size(), 2u);
  EXPECT_THROW(write_safetensors_index(path("index.json"), 0, {{"a", "../x.safetensors"}}), Error);
  EXPECT_FALSE(fs::exists(path("index.json")));
}
