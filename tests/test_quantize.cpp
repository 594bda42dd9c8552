// llmint8 quantize (src/model/quantize.h): the saved 8-bit checkpoint in transformers/bitsandbytes
// layout loads to the same int8 weights and the same logits as quantizing at load, is about half
// the size of fp16, and is never left half-written.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "llmint8/error.h"
#include "llmint8/model.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/quantize.h"
#include "model/transformer.h"
#include "temp_dir.h"

namespace {

using namespace llmint8;
namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(LLMINT8_SOURCE_DIR) / "tests/fixtures";
const char* kFamilies[] = {"llama", "qwen2", "opt", "gpt2", "gpt_neox", "bloom"};

// Under a directory of this process's own (mkdtemp; removed at exit): ctest -j runs the tests of
// this file at once in separate processes, which must not share (and remove) each other's files.
fs::path fresh_dir(const std::string& name) {
  static const test::TempDir root;
  const fs::path d = root.dir() / name;
  fs::remove_all(d);
  return d;
}

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& ids) {
  std::vector<float> out;
  m.new_session()->forward(ids, &out, /*all_logits=*/true);
  return out;
}

const std::vector<int32_t> kIds = {1, 17, 42, 99, 3, 64, 127, 5, 88, 23};

// Writes `src`'s checkpoint with every float tensor as `to` (F16/BF16) into `dst` (config copied).
void convert_checkpoint(const fs::path& src, const fs::path& dst, DType to) {
  fs::create_directories(dst);
  fs::copy_file(src / "config.json", dst / "config.json");
  auto ck = io::Checkpoint::open(src.string());
  io::SafetensorsWriter w((dst / "model.safetensors").string());
  for (const auto& n : ck->names()) w.add(n, to, ck->get(n).shape);
  for (const auto& n : ck->names()) {
    const io::TensorInfo& t = ck->get(n);
    std::vector<float> f(size_t(t.numel()));
    io::Checkpoint::read_f32(t, f.data());
    std::vector<uint16_t> h(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = to == DType::BF16 ? to_bf16(f[i]).bits : to_f16(f[i]).bits;
    w.write(n, h.data());
  }
  w.commit();
}

uint64_t dir_weight_bytes(const fs::path& d) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(d))
    if (e.path().extension() == ".safetensors") n += fs::file_size(e.path());
  return n;
}

TEST(Quantize, EveryFamilyRoundTripsToTheSameInt8WeightsAndLogits) {
  for (const char* fam : kFamilies) {
    SCOPED_TRACE(fam);
    // From an fp16 checkpoint, so that loading it at Int8 and loading the saved file hold the
    // same 16-bit values everywhere: the logits must then be identical, not just close.
    const fs::path f16dir = fresh_dir(std::string(fam) + "-f16"), out = fresh_dir(std::string(fam) + "-int8");
    convert_checkpoint(kFixtures / fam, f16dir, DType::F16);
    const model::QuantizeResult r = model::quantize_checkpoint(f16dir.string(), out.string(), {});
    EXPECT_EQ(r.shards, std::vector<std::string>{"model.safetensors"});
    EXPECT_FALSE(r.plan.quantized.empty());

    auto at_load = Model::load(f16dir.string(), {.precision = Precision::Int8, .threads = 2});
    auto saved = Model::load(out.string(), {.precision = Precision::Int8, .threads = 2});
    ASSERT_EQ(at_load->info().quantized_modules, saved->info().quantized_modules);
    ASSERT_EQ(at_load->info().quantized_modules.size(), r.plan.quantized.size());
    for (const auto& m : at_load->info().quantized_modules) {
      const Int8Weight* a = model::find_int8_weight(*at_load, m);
      const Int8Weight* b = model::find_int8_weight(*saved, m);
      ASSERT_TRUE(a && b) << m;
      ASSERT_EQ(a->out_features, b->out_features);
      const size_t n = size_t(a->out_features * a->in_features);
      EXPECT_EQ(0, std::memcmp(a->CB, b->CB, n)) << "CB of " << m;
      EXPECT_EQ(0, std::memcmp(a->SCB, b->SCB, size_t(a->out_features) * 4)) << "SCB of " << m;
    }
    const std::vector<float> la = logits_of(*at_load, kIds), lb = logits_of(*saved, kIds);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * 4)) << "logits differ";
  }
}

TEST(Quantize, Fp32CheckpointGivesTheLoadersInt8Weights) {
  const fs::path out = fresh_dir("llama-from-f32");
  model::quantize_checkpoint((kFixtures / "llama").string(), out.string(), {});
  auto at_load = Model::load((kFixtures / "llama").string(), {.threads = 2});
  auto saved = Model::load(out.string(), {.threads = 2});
  for (const auto& m : at_load->info().quantized_modules) {
    const Int8Weight* a = model::find_int8_weight(*at_load, m);
    const Int8Weight* b = model::find_int8_weight(*saved, m);
    ASSERT_TRUE(a && b) << m;
    EXPECT_EQ(0, std::memcmp(a->CB, b->CB, size_t(a->out_features * a->in_features))) << m;
    EXPECT_EQ(0, std::memcmp(a->SCB, b->SCB, size_t(a->out_features) * 4)) << m;
  }
  // And equal to the independent writer's file (bitsandbytes' formula in PyTorch), tensor by tensor.
  auto mine = io::Checkpoint::open(out.string());
  auto theirs = io::Checkpoint::open((kFixtures / "llama-int8-hf").string());
  int compared = 0;
  for (const auto& n : theirs->names()) {
    const io::TensorInfo& t = theirs->get(n);
    if (t.dtype != DType::I8 && t.dtype != DType::U8 && n.find(".SCB") == std::string::npos) continue;
    const io::TensorInfo& u = mine->get(n, t.shape);
    ASSERT_EQ(u.dtype, t.dtype) << n;
    EXPECT_EQ(0, std::memcmp(u.data, t.data, t.nbytes)) << n;
    ++compared;
  }
  EXPECT_EQ(compared, 14 * 3);
  // Non-quantized tensors are fp16 copies of the fp32 originals, as in the independent file.
  for (const auto& n : theirs->names()) {
    const io::TensorInfo& t = theirs->get(n);
    if (t.dtype != DType::F16) continue;
    const io::TensorInfo& u = mine->get(n, t.shape);
    EXPECT_EQ(u.dtype, DType::F16) << n;
    EXPECT_EQ(0, std::memcmp(u.data, t.data, t.nbytes)) << n;
  }
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(out / "config.json"));
  const auto& q = cfg.at("quantization_config");
  EXPECT_EQ(q.at("quant_method"), "bitsandbytes");
  EXPECT_EQ(q.at("load_in_8bit"), true);
  EXPECT_EQ(q.at("llm_int8_threshold"), 6.0);
  EXPECT_EQ(q.at("llm_int8_has_fp16_weight"), false);
  EXPECT_EQ(cfg.at("dtype"), "float16");
}

// A synthetic Llama whose Linear layers dominate, as in real models (embeddings are a large share
// of the tiny fixtures): the saved file must be <= 0.55x the fp16 checkpoint.
TEST(Quantize, SavedCheckpointIsAboutHalfOfFp16AndShards) {
  const fs::path f16dir = fresh_dir("synthetic-f16");
  fs::create_directories(f16dir);
  const int64_t H = 256, I = 688, L = 8, V = 512, KV = 128;
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                        {"hidden_size", H}, {"intermediate_size", I}, {"num_hidden_layers", L},
                        {"num_attention_heads", 8}, {"num_key_value_heads", 4}, {"vocab_size", V},
                        {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5},
                        {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  std::ofstream(f16dir / "config.json") << cfg.dump();
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {
      {"model.embed_tokens.weight", {V, H}}, {"model.norm.weight", {H}}, {"lm_head.weight", {V, H}}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) tensors.push_back({p + n + ".weight", {H}});
    tensors.push_back({p + "self_attn.q_proj.weight", {H, H}});
    tensors.push_back({p + "self_attn.k_proj.weight", {KV, H}});
    tensors.push_back({p + "self_attn.v_proj.weight", {KV, H}});
    tensors.push_back({p + "self_attn.o_proj.weight", {H, H}});
    tensors.push_back({p + "mlp.gate_proj.weight", {I, H}});
    tensors.push_back({p + "mlp.up_proj.weight", {I, H}});
    tensors.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  {
    io::SafetensorsWriter w((f16dir / "model.safetensors").string());
    for (auto& [n, s] : tensors) w.add(n, DType::F16, s);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 0.05f);
    for (auto& [n, s] : tensors) {
      int64_t k = 1;
      for (int64_t d : s) k *= d;
      std::vector<uint16_t> h(static_cast<size_t>(k));
      const bool norm = s.size() == 1;
      for (auto& x : h) x = to_f16(norm ? 1.f + nd(rng) : nd(rng)).bits;
      w.write(n, h.data());
    }
    w.commit();
  }
  const uint64_t f16_bytes = dir_weight_bytes(f16dir);

  const fs::path out = fresh_dir("synthetic-int8");
  model::quantize_checkpoint(f16dir.string(), out.string(), {});
  const double ratio = double(dir_weight_bytes(out)) / double(f16_bytes);
  std::printf("saved int8 checkpoint: %.4f x the fp16 checkpoint (%llu / %llu bytes)\n", ratio,
              (unsigned long long)dir_weight_bytes(out), (unsigned long long)f16_bytes);
  EXPECT_LE(ratio, 0.55);

  // Sharded: a 1 MB limit splits it; the index names every tensor and the model loads the same.
  const fs::path sharded = fresh_dir("synthetic-int8-sharded");
  const model::QuantizeResult r = model::quantize_checkpoint(
      f16dir.string(), sharded.string(), {.max_shard_bytes = 1 << 20});
  EXPECT_GT(r.shards.size(), 2u);
  ASSERT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));
  auto a = Model::load(out.string(), {.threads = 2});
  auto b = Model::load(sharded.string(), {.threads = 2});
  const std::vector<int32_t> ids = {1, 5, 9, 200, 300};
  const std::vector<float> la = logits_of(*a, ids), lb = logits_of(*b, ids);
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * 4));
  EXPECT_NEAR(double(a->info().weight_bytes) / double(a->info().weight_bytes_16bit), 0.51, 0.04);
}

bool mapped_by_this_process(const fs::path& file) {
  std::ifstream maps("/proc/self/maps");
  const std::string want = fs::canonical(file).string();
  for (std::string line; std::getline(maps, line);)
    if (line.size() >= want.size() && line.compare(line.size() - want.size(), want.size(), want) == 0) return true;
  return false;
}

// On the CPU an 8-bit checkpoint's int8 weights are used where they lie in the file mapping.
TEST(Quantize, Int8CheckpointIsMappedNotCopied) {
  const fs::path out = fresh_dir("mapped");
  model::quantize_checkpoint((kFixtures / "llama").string(), out.string(), {});
  {
    auto m = Model::load(out.string(), {.threads = 2});
    const Int8Weight* w = model::find_int8_weight(*m, "model.layers.0.self_attn.q_proj");
    ASSERT_NE(w, nullptr);
    EXPECT_TRUE(mapped_by_this_process(out / "model.safetensors"));
    auto ck = io::Checkpoint::open(out.string());
    const io::TensorInfo& t = ck->get("model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(0, std::memcmp(w->CB, t.data, t.nbytes));
  }
  EXPECT_FALSE(mapped_by_this_process(out / "model.safetensors"));  // unmapped with the model
  // A 16-bit checkpoint is converted while loading: nothing stays mapped.
  auto m16 = Model::load((kFixtures / "llama").string(), {.threads = 2});
  EXPECT_FALSE(mapped_by_this_process(kFixtures / "llama" / "model.safetensors"));
}

TEST(Quantize, SkipListAndThresholdAreRecordedAndHonoured) {
  const fs::path out = fresh_dir("llama-skip");
  model::QuantizeOptions o;
  o.threshold = 3.5f;
  o.skip_modules = {"mlp.down_proj"};
  const auto r = model::quantize_checkpoint((kFixtures / "llama").string(), out.string(), o);
  EXPECT_EQ(r.plan.kept.size(), 2u);
  EXPECT_EQ(r.plan.quantized.size(), 12u);
  auto ck = io::Checkpoint::open(out.string());
  EXPECT_EQ(ck->get("model.layers.0.mlp.down_proj.weight").dtype, DType::F16);
  EXPECT_EQ(ck->find("model.layers.0.mlp.down_proj.SCB"), nullptr);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_EQ(cfg["quantization_config"]["llm_int8_threshold"], 3.5);
  EXPECT_EQ(cfg["quantization_config"]["llm_int8_skip_modules"], nlohmann::json({"mlp.down_proj"}));

  auto m = Model::load(out.string(), {.threads = 2});
  EXPECT_FLOAT_EQ(m->info().threshold, 3.5f);  // from quantization_config
  EXPECT_EQ(m->info().quantized_modules.size(), 12u);
  LoadOptions over;
  over.threshold = 0.f;
  over.threshold_from_checkpoint = false;  // --threshold given on the command line
  EXPECT_FLOAT_EQ(Model::load(out.string(), over)->info().threshold, 0.f);
}

TEST(Quantize, RefusesExistingOutputAndQuantizedInput) {
  const fs::path out = fresh_dir("exists");
  fs::create_directories(out);
  std::ofstream(out / "keep.txt") << "user data";
  try {
    model::quantize_checkpoint((kFixtures / "llama").string(), out.string(), {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(out / "keep.txt"));
  try {
    model::quantize_checkpoint((kFixtures / "llama-int8-hf").string(), fresh_dir("again").string(), {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already an 8-bit checkpoint"), std::string::npos) << e.what();
  }
}

// Every tensor the loader reads is planned for by expected_tensors (checked on every family's
// fixture), and a checkpoint that does not match its config.json is refused before anything is
// written -- it used to be quantized into an output the loader then refused (found by the
// bad-input matrix, tests/test_bad_input_matrix.cpp).
TEST(Quantize, RefusesACheckpointThatDoesNotMatchItsConfig) {
  for (const char* fam : kFamilies) {
    SCOPED_TRACE(fam);
    const fs::path src = kFixtures / fam;
    const model::ModelConfig c = model::load_config(src.string());
    auto ck = io::Checkpoint::open(src.string());
    for (const auto& e : model::expected_tensors(model::arch_for(c), c)) {
      const io::TensorInfo* t = ck->find(e.name);
      ASSERT_NE(t, nullptr) << e.name;
      EXPECT_EQ(t->shape, e.shape) << e.name;
    }
  }
  const fs::path in = fresh_dir("mismatch-in"), out = fresh_dir("mismatch-out");
  fs::copy(kFixtures / "llama", in);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(in / "config.json"));
  cfg["vocab_size"] = 100;  // the embedding has 128 rows
  std::ofstream(in / "config.json") << cfg.dump();
  try {
    model::quantize_checkpoint(in.string(), out.string(), {});
    ADD_FAILURE() << "quantized a checkpoint that does not match its config";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'model.embed_tokens.weight' has shape [128, 64], expected [100, 64]"),
              std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(e.path().filename().string().find("mismatch-out.tmp"), std::string::npos) << e.path();
}

// An exception mid-way (a failed write, Ctrl-C turned into an exception) removes everything.
TEST(Quantize, InterruptedWriteLeavesNoOutput) {
  const fs::path out = fresh_dir("interrupted");
  int calls = 0;
  model::QuantizeOptions o;
  o.progress = [&](uint64_t, uint64_t) {
    if (++calls == 5) throw Error("injected fault");
  };
  EXPECT_THROW(model::quantize_checkpoint((kFixtures / "qwen2").string(), out.string(), o), Error);
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(e.path().filename().string().find("interrupted.tmp"), std::string::npos) << e.path();
}

// A process killed mid-way cannot clean up: what it leaves must not look like a model.
TEST(Quantize, KilledProcessLeavesNothingThatLooksLikeAModel) {
  const fs::path out = fresh_dir("killed");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    model::QuantizeOptions o;
    int calls = 0;
    o.progress = [&](uint64_t, uint64_t) {
      if (++calls == 5) _exit(3);  // dies without unwinding, as under SIGKILL
    };
    try {
      model::quantize_checkpoint((kFixtures / "opt").string(), out.string(), o);
    } catch (...) {
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 3);
  EXPECT_FALSE(fs::exists(out));
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(pid);
  ASSERT_TRUE(fs::exists(tmp));  // the leftover, under a temporary name...
  EXPECT_FALSE(fs::exists(tmp / "config.json"));  // ...without the file that makes a model
  EXPECT_THROW(Model::load(tmp.string()), Error);
  fs::remove_all(tmp);
}

// Corrupted 8-bit checkpoints fail with an Error naming the problem.
TEST(Quantize, CorruptedQuantizedCheckpointsFailCleanly) {
  const fs::path good = fresh_dir("good");
  model::quantize_checkpoint((kFixtures / "llama").string(), good.string(), {});
  const auto copy = [&](const std::string& name) {
    const fs::path d = fresh_dir(name);
    fs::copy(good, d);
    return d;
  };
  const auto expect_error = [](const fs::path& d, const std::string& needle) {
    try {
      Model::load(d.string());
      ADD_FAILURE() << d << ": loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  };
  {
    const fs::path d = copy("truncated");
    fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") / 2);
    expect_error(d, "model.safetensors");
  }
  {
    // weight_format 1 (an old tiled layout): flip the byte in place.
    const fs::path d = copy("format1");
    auto ck = io::Checkpoint::open(d.string());
    const io::TensorInfo& t = ck->get("model.layers.0.self_attn.q_proj.weight_format");
    // Offset of the byte within the file: header length (u64) + 8 + its data offset.
    std::ifstream in(d / "model.safetensors", std::ios::binary);
    uint64_t hlen = 0;
    in.read(reinterpret_cast<char*>(&hlen), 8);
    std::string header(hlen, ' ');
    in.read(header.data(), std::streamsize(hlen));
    const auto j = nlohmann::json::parse(header);
    const uint64_t off = 8 + hlen + j.at(t.name).at("data_offsets")[0].get<uint64_t>();
    ck.reset();
    in.close();
    std::fstream f(d / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(off));
    f.put(char(1));
    f.close();
    expect_error(d, "weight_format");
  }
  {
    // SCB of the wrong length.
    const fs::path d = copy("scb");
    auto ck = io::Checkpoint::open(d.string());
    io::SafetensorsWriter w((d / "model.safetensors.new").string());
    for (const auto& n : ck->names()) {
      auto s = ck->get(n).shape;
      if (n == "model.layers.1.mlp.up_proj.SCB") s[0] -= 1;
      w.add(n, ck->get(n).dtype, s);
    }
    for (const auto& n : ck->names()) w.write(n, ck->get(n).data);
    w.commit();
    ck.reset();
    fs::rename(d / "model.safetensors.new", d / "model.safetensors");
    expect_error(d, "model.layers.1.mlp.up_proj.SCB");
  }
  {
    const fs::path d = copy("bad-qconfig");
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(d / "config.json"));
    cfg["quantization_config"]["load_in_8bit"] = false;
    cfg["quantization_config"]["load_in_4bit"] = true;
    std::ofstream(d / "config.json") << cfg.dump();
    expect_error(d, "quantization_config");
  }
}

}  // namespace
