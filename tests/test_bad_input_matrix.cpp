// The bad-input matrix (issue #7): corrupted model directories, files and arguments, each given
// to the real llmint8 binary for every subcommand it concerns. One test case per row
// (BadInput/Matrix.Rejects/<row>); every run must
//   - end by itself within the time limit (a hang is killed and fails the case),
//   - exit with status 1, not by a signal,
//   - print exactly one line on stderr, "llmint8: error: ...", naming the file or the problem,
//   - print nothing on stdout,
//   - for quantize -o OUT, leave neither OUT nor OUT.tmp-* behind.
// Each row starts from a writable copy of stories260K (../shared) in a private temporary
// directory and breaks one thing. The truncation rows are generated from the parsed header of
// the real model.safetensors: a cut inside the 8-byte length, right after it, inside the header
// JSON, at the start of the data, and inside and at the end of every tensor's bytes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
namespace test = llmint8::test;
using nlohmann::json;

namespace {

const std::string kShared = LLMINT8_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K";

// ---- the subcommands --------------------------------------------------------------------------

enum Sub : unsigned {
  kGenerate = 1,
  kPerplexity = 2,
  kInfo = 4,
  kQuantize = 8,
  kEval = 16,
  kTokenize = 32,        // tokenize --text FILE
  kTokenizePrompt = 64,  // tokenize -p TEXT
};
constexpr unsigned kLoads = kGenerate | kPerplexity | kInfo | kQuantize | kEval;  // read the weights
constexpr unsigned kTokenizes = kGenerate | kPerplexity | kEval | kTokenize;       // read the tokenizer
constexpr unsigned kAll = kLoads | kTokenize;

const char* sub_name(Sub s) {
  switch (s) {
    case kGenerate: return "generate";
    case kPerplexity: return "perplexity";
    case kInfo: return "info";
    case kQuantize: return "quantize";
    case kEval: return "eval";
    case kTokenize: return "tokenize --text";
    case kTokenizePrompt: return "tokenize -p";
  }
  return "?";
}

// What a row's subcommands run on; a row's setup breaks one of them.
struct Inputs {
  std::string root;   // the case's private directory
  std::string model;  // -m: a writable copy of stories260K (root/model)
  std::string text;   // --text: a short story (root/story.txt)
  std::string prompt = "Once upon a time";
  std::string data = kShared + "/data";  // eval --data
  std::string quantize_out() const { return root + "/quantized"; }
};

std::vector<std::string> args_for(Sub s, const Inputs& in) {
  const std::vector<std::string> t1 = {"--threads", "1"};
  std::vector<std::string> a;
  switch (s) {
    case kGenerate: a = {"generate", "-m", in.model, "-p", in.prompt, "-n", "4"}; break;
    case kPerplexity: a = {"perplexity", "-m", in.model, "--text", in.text, "--ctx", "64"}; break;
    case kInfo: a = {"info", "-m", in.model}; break;
    case kQuantize: a = {"quantize", "-m", in.model, "-o", in.quantize_out()}; break;
    case kEval: a = {"eval", "-m", in.model, "--tasks", "lambada", "--limit", "2", "--data", in.data}; break;
    case kTokenize: a = {"tokenize", "-m", in.model, "--text", in.text}; break;
    case kTokenizePrompt: a = {"tokenize", "-m", in.model, "-p", in.prompt}; break;
  }
  a.insert(a.end(), t1.begin(), t1.end());
  return a;
}

struct Row {
  std::string name;     // the test case's name
  unsigned subs;        // the subcommands to run
  std::string mention;  // stderr must contain this (the file or the problem)
  std::function<void(Inputs&)> setup;
};

// gtest prints a failing case's parameter: its name, not its bytes.
void PrintTo(const Row& r, std::ostream* os) { *os << r.name; }

// ---- building broken inputs -------------------------------------------------------------------

void copy_dir(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) {
    const std::string dst = to + "/" + e.path().filename().string();
    fs::copy_file(e.path(), dst, fs::copy_options::overwrite_existing);
    fs::permissions(dst, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  }
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char(uint8_t(n >> (8 * i)));
  return s;
}

// A safetensors file taken apart: its header (parsed) and its data area.
struct St {
  uint64_t header_len = 0;
  json header;
  std::string data;
};

St load_st(const std::string& path) {
  const std::string b = test::read_file(path);
  St s;
  if (b.size() < 8) return s;
  std::memcpy(&s.header_len, b.data(), 8);
  s.header = json::parse(b.substr(8, s.header_len));
  s.data = b.substr(8 + s.header_len);
  return s;
}

void save_st_raw(const std::string& path, const std::string& header_text, const std::string& data) {
  test::write_file(path, le64(header_text.size()) + header_text + data);
}

void save_st(const std::string& path, const json& header, const std::string& data) {
  save_st_raw(path, header.dump(), data);
}

std::string weights(const Inputs& in) { return in.model + "/model.safetensors"; }

void edit_header(const Inputs& in, const std::function<void(json&)>& f) {
  St s = load_st(weights(in));
  f(s.header);
  save_st(weights(in), s.header, s.data);
}

void edit_json(const std::string& path, const std::function<void(json&)>& f) {
  json j = json::parse(test::read_file(path));
  f(j);
  test::write_file(path, j.dump(2));
}

void edit_config(const Inputs& in, const std::function<void(json&)>& f) { edit_json(in.model + "/config.json", f); }

// One float32 element of a tensor of model.safetensors set to v.
void poke_f32(const Inputs& in, const std::string& tensor, size_t element, float v) {
  St s = load_st(weights(in));
  const uint64_t begin = s.header[tensor]["data_offsets"][0].get<uint64_t>();
  std::memcpy(s.data.data() + begin + 4 * element, &v, 4);
  save_st(weights(in), s.header, s.data);
}

// A sparse file of `size` bytes beginning with `prefix` (nothing is written past it).
void sparse_file(const std::string& path, const std::string& prefix, uint64_t size) {
  fs::remove(path);
  test::write_file(path, prefix);
  fs::resize_file(path, size);
}

void make_fifo(const std::string& path) {
  fs::remove(path);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path;
}

void make_symlink(const std::string& target, const std::string& path) {
  fs::remove(path);
  fs::create_symlink(target, path);
}

// model.safetensors moved to one shard named by an index; `edit` changes the index after.
void to_sharded(const Inputs& in, const std::function<void(json&)>& edit) {
  const std::string shard = "model-00001-of-00001.safetensors";
  fs::rename(weights(in), in.model + "/" + shard);
  json idx = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  const St s = load_st(in.model + "/" + shard);
  for (const auto& [name, v] : s.header.items())
    if (name != "__metadata__") idx["weight_map"][name] = shard;
  edit(idx);
  test::write_file(in.model + "/model.safetensors.index.json", idx.dump(2));
}

// The model's vocabulary cut to its first n ids (embedding rows and config.json): the
// tokenizer's ids beyond n then have no embedding.
void shrink_vocab(const Inputs& in, int64_t n) {
  St s = load_st(weights(in));
  const std::string embed = "model.embed_tokens.weight";
  const int64_t hidden = s.header[embed]["shape"][1].get<int64_t>();
  const uint64_t cut_begin = s.header[embed]["data_offsets"][0].get<uint64_t>() + uint64_t(n * hidden * 4);
  const uint64_t cut_end = s.header[embed]["data_offsets"][1].get<uint64_t>();
  const uint64_t removed = cut_end - cut_begin;
  s.data.erase(cut_begin, removed);
  for (auto& [name, v] : s.header.items()) {
    if (name == "__metadata__") continue;
    auto& off = v["data_offsets"];
    if (name == embed) {
      off[1] = cut_begin;
      v["shape"][0] = n;
    } else if (off[0].get<uint64_t>() >= cut_end) {
      off[0] = off[0].get<uint64_t>() - removed;
      off[1] = off[1].get<uint64_t>() - removed;
    }
  }
  save_st(weights(in), s.header, s.data);
  edit_config(in, [n](json& c) { c["vocab_size"] = n; });
}

// tokenizer.json with `merges` copies of one merge, streamed to disk (60 MB for 10 million).
void tokenizer_with_merges(const std::string& path, size_t merges) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  std::fputs(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [)", f);
  for (size_t i = 0; i < merges; ++i) std::fputs(i ? ",\"a b\"" : "\"a b\"", f);
  std::fputs("]}}", f);
  ASSERT_EQ(std::fclose(f), 0) << path;
}

// An 8-bit checkpoint of stories260K made by `llmint8 quantize` in place of the model copy.
void to_int8_checkpoint(Inputs& in) {
  const std::string out = in.root + "/int8";
  const auto r = test::run_cli({"quantize", "-m", in.model, "-o", out, "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << test::describe({"quantize"}, r);
  in.model = out;
}

std::string identifier(const std::string& s) {
  std::string o;
  for (char c : s) o += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return o;
}

// ---- the rows ---------------------------------------------------------------------------------

// Truncations of model.safetensors at every section boundary, from the real file's header.
std::vector<Row> truncation_rows() {
  std::vector<Row> rows;
  if (!fs::exists(kStories + "/model.safetensors")) return rows;
  const St s = load_st(kStories + "/model.safetensors");
  const uint64_t n = s.header_len, data = 8 + n;
  auto cut = [&](const std::string& name, uint64_t at) {
    rows.push_back({"truncated_" + name, kLoads, "model.safetensors", [at](Inputs& in) {
                      fs::resize_file(weights(in), at);
                    }});
  };
  cut("empty", 0);
  cut("inside_header_length_at_4", 4);
  cut("inside_header_length_at_7", 7);
  cut("right_after_header_length", 8);
  cut("inside_header_json_first_byte", 9);
  cut("inside_header_json_middle", 8 + n / 2);
  cut("inside_header_json_last_byte", 8 + n - 1);
  cut("at_start_of_data", data);
  // Tensors in data order.
  std::vector<std::pair<uint64_t, std::pair<uint64_t, std::string>>> ts;
  for (const auto& [name, v] : s.header.items())
    if (name != "__metadata__")
      ts.push_back({v["data_offsets"][0].get<uint64_t>(), {v["data_offsets"][1].get<uint64_t>(), name}});
  std::sort(ts.begin(), ts.end());
  for (size_t i = 0; i < ts.size(); ++i) {
    const uint64_t b = ts[i].first, e = ts[i].second.first;
    const std::string id = (i < 10 ? "0" : "") + std::to_string(i) + "_" + identifier(ts[i].second.second);
    cut("inside_tensor_" + id, data + b + (e - b) / 2);
    if (i + 1 < ts.size()) cut("at_end_of_tensor_" + id, data + e);  // the last one's end is the file's
  }
  cut("one_byte_short", data + ts.back().second.first - 1);
  return rows;
}

std::vector<Row> rows() {
  std::vector<Row> r = truncation_rows();
  auto add = [&](std::string name, unsigned subs, std::string mention, std::function<void(Inputs&)> f) {
    r.push_back({std::move(name), subs, std::move(mention), std::move(f)});
  };
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  const std::string o = "model.layers.1.self_attn.o_proj.weight";  // the same size as q
  const std::string v = "model.layers.3.self_attn.v_proj.weight";
  const std::string down = "model.layers.2.mlp.down_proj.weight";

  // -- model.safetensors: the header length and the header
  auto header_len = [](uint64_t len) {
    return [len](Inputs& in) {
      std::string b = test::read_file(weights(in));
      std::memcpy(b.data(), le64(len).data(), 8);
      test::write_file(weights(in), b);
    };
  };
  add("header_length_larger_than_file", kLoads, "exceeds the file size", [header_len](Inputs& in) {
    header_len(fs::file_size(weights(in)) + 1000)(in);
  });
  add("header_length_2_pow_63", kLoads, "header length 9223372036854775808 exceeds the file size",
      header_len(uint64_t(1) << 63));
  add("header_length_max_u64", kLoads, "exceeds the file size", header_len(~uint64_t(0)));
  add("header_length_zero", kLoads, "invalid JSON header", header_len(0));
  add("header_not_json", kLoads, "invalid JSON header", [](Inputs& in) {
    St s = load_st(weights(in));
    save_st_raw(weights(in), std::string(s.header_len, '#'), s.data);
  });
  add("header_is_json_array", kLoads, "header is JSON array", [](Inputs& in) {
    St s = load_st(weights(in));
    save_st_raw(weights(in), "[1, 2, 3]", s.data);
  });
  add("header_nested_too_deep", kLoads, "nested deeper", [](Inputs& in) {
    St s = load_st(weights(in));
    save_st_raw(weights(in), std::string(5000, '[') + std::string(5000, ']'), s.data);
  });
  add("header_metadata_not_strings", kLoads, "__metadata__ entry 'format' is not a string",
      [](Inputs& in) { edit_header(in, [](json& h) { h["__metadata__"]["format"] = 3; }); });
  add("duplicate_tensor_key", kLoads, "tensor defined twice", [](Inputs& in) {
    St s = load_st(weights(in));
    std::string text = s.header.dump();
    text.insert(1, "\"model.norm.weight\":" + s.header["model.norm.weight"].dump() + ",");
    save_st_raw(weights(in), text, s.data);
  });
  // -- model.safetensors: tensor entries
  add("offsets_out_of_range", kLoads, "extend past the data area", [v](Inputs& in) {
    edit_header(in, [v](json& h) {
      const uint64_t len = h[v]["data_offsets"][1].get<uint64_t>() - h[v]["data_offsets"][0].get<uint64_t>();
      h[v]["data_offsets"] = {uint64_t(1) << 40, (uint64_t(1) << 40) + len};
    });
  });
  add("offsets_overlapping", kLoads, "overlaps", [q, o](Inputs& in) {
    edit_header(in, [q, o](json& h) { h[q]["data_offsets"] = h[o]["data_offsets"]; });
  });
  add("offsets_begin_after_end", kLoads, "begin > end", [q](Inputs& in) {
    edit_header(in, [q](json& h) { h[q]["data_offsets"] = {h[q]["data_offsets"][1], h[q]["data_offsets"][0]}; });
  });
  add("offsets_not_integers", kLoads, "is not [begin, end] of non-negative integers", [q](Inputs& in) {
    edit_header(in, [q](json& h) { h[q]["data_offsets"] = {-8, "16384"}; });
  });
  add("shape_does_not_match_byte_count", kLoads, "data_offsets span 16384 bytes but shape [64, 63]",
      [q](Inputs& in) { edit_header(in, [q](json& h) { h[q]["shape"] = {64, 63}; }); });
  add("dtype_does_not_match_byte_count", kLoads, "of F16 needs 8192", [q](Inputs& in) {
    edit_header(in, [q](json& h) { h[q]["dtype"] = "F16"; });
  });
  add("unknown_dtype", kLoads, "unknown dtype \"F8_E9M9\"", [q](Inputs& in) {
    edit_header(in, [q](json& h) { h[q]["dtype"] = "F8_E9M9"; });
  });
  add("integer_dtype_for_a_float_weight", kLoads, "q_proj.weight' has dtype I32", [q](Inputs& in) {
    edit_header(in, [q](json& h) { h[q]["dtype"] = "I32"; });
  });
  add("negative_dimension", kLoads, "is not a non-negative 64-bit integer", [q](Inputs& in) {
    edit_header(in, [q](json& h) { h[q]["shape"] = {-64, -64}; });
  });
  add("shape_differs_from_config", kLoads, "down_proj.weight' has shape [172, 64], expected [64, 172]",
      [down](Inputs& in) { edit_header(in, [down](json& h) { h[down]["shape"] = {172, 64}; }); });
  add("missing_tensor", kLoads, "tensor 'model.layers.2.mlp.down_proj.weight' not found", [down](Inputs& in) {
    edit_header(in, [down](json& h) {  // renamed: the file stays valid, only the loader can notice
      h[down + "_renamed"] = h[down];
      h.erase(down);
    });
  });
  add("tensor_of_1TB_declared", kLoads, "'huge': data_offsets [1044992, 1099512672768] extend past the data area",
      [](Inputs& in) {
        edit_header(in, [](json& h) {
          h["huge"] = {{"dtype", "F32"}, {"shape", {262144, 1048576}}, {"data_offsets", {1044992, 1044992 + (uint64_t(1) << 40)}}};
        });
      });
  add("nan_weight", kLoads, "v_proj.weight': holds NaN at element 17", [v](Inputs& in) {
    poke_f32(in, v, 17, std::nanf(""));
  });
  add("inf_weight", kLoads, "v_proj.weight': holds Inf at element 17", [v](Inputs& in) {
    poke_f32(in, v, 17, -INFINITY);
  });
  add("nan_in_embedding", kLoads, "embed_tokens.weight': holds NaN", [](Inputs& in) {
    poke_f32(in, "model.embed_tokens.weight", 5000, std::nanf(""));
  });
  add("inf_in_norm_weight", kLoads, "model.norm.weight': holds Inf", [](Inputs& in) {
    poke_f32(in, "model.norm.weight", 3, INFINITY);
  });
  // -- model.safetensors: the file itself
  add("weights_missing", kLoads, "no model.safetensors or model.safetensors.index.json",
      [](Inputs& in) { fs::remove(weights(in)); });
  add("weights_are_a_directory", kLoads, "model.safetensors: is a directory", [](Inputs& in) {
    fs::remove(weights(in));
    fs::create_directory(weights(in));
  });
  add("weights_are_a_fifo", kLoads, "model.safetensors: is a FIFO, expected a regular file", [](Inputs& in) {
    make_fifo(weights(in));
  });
  add("weights_are_dev_zero", kLoads, "model.safetensors: is a character device", [](Inputs& in) {
    make_symlink("/dev/zero", weights(in));
  });
  add("weights_are_a_dangling_symlink", kLoads, "model.safetensors", [](Inputs& in) {
    make_symlink(in.root + "/nowhere", weights(in));
  });
  add("weights_are_garbage", kLoads, "model.safetensors", [](Inputs& in) {
    test::write_file(weights(in), "this is not a safetensors file at all");
  });

  // -- sharded checkpoints: model.safetensors.index.json
  const std::string index = "model.safetensors.index.json";
  add("index_names_a_missing_shard", kLoads, "shard 'model-00002-of-00002.safetensors' does not exist",
      [down](Inputs& in) {
        to_sharded(in, [down](json& j) { j["weight_map"][down] = "model-00002-of-00002.safetensors"; });
      });
  add("index_names_a_shard_outside_the_directory", kLoads, "'../model.safetensors' is not a plain file name",
      [down](Inputs& in) {
        fs::copy_file(kStories + "/model.safetensors", in.root + "/model.safetensors");
        to_sharded(in, [down](json& j) { j["weight_map"][down] = "../model.safetensors"; });
      });
  add("index_names_an_absolute_path", kLoads, "is not a plain file name", [down](Inputs& in) {
    to_sharded(in, [down](json& j) { j["weight_map"][down] = kStories + "/model.safetensors"; });
  });
  add("index_maps_a_tensor_its_shard_lacks", kLoads, "which does not contain it", [](Inputs& in) {
    to_sharded(in, [](json& j) { j["weight_map"]["model.layers.9.mlp.up_proj.weight"] = j["weight_map"]["model.norm.weight"]; });
  });
  add("index_not_json", kLoads, index + ": invalid JSON", [](Inputs& in) {
    to_sharded(in, [](json&) {});
    test::write_file(in.model + "/model.safetensors.index.json", "{\"weight_map\": {\"a\": ");
  });
  add("index_without_weight_map", kLoads, "missing \"weight_map\"", [](Inputs& in) {
    to_sharded(in, [](json& j) { j.erase("weight_map"); });
  });
  add("index_over_64MiB", kLoads, index + ": file is 67108865 bytes, over the 67108864-byte limit", [](Inputs& in) {
    to_sharded(in, [](json&) {});
    sparse_file(in.model + "/model.safetensors.index.json", "{", (uint64_t(64) << 20) + 1);
  });
  add("index_is_a_fifo", kLoads, index + ": is a FIFO", [](Inputs& in) {
    to_sharded(in, [](json&) {});
    make_fifo(in.model + "/model.safetensors.index.json");
  });
  add("shard_truncated", kLoads, "model-00001-of-00001.safetensors", [](Inputs& in) {
    to_sharded(in, [](json&) {});
    fs::resize_file(in.model + "/model-00001-of-00001.safetensors", 500000);
  });

  // -- config.json (tokenize reads it too, for the BOS/EOS ids)
  add("config_missing", kLoads, "config.json: cannot open", [](Inputs& in) { fs::remove(in.model + "/config.json"); });
  add("config_empty", kAll, "config.json: invalid JSON", [](Inputs& in) { test::write_file(in.model + "/config.json", ""); });
  add("config_not_json", kAll, "config.json: invalid JSON", [](Inputs& in) {
    test::write_file(in.model + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,");
  });
  add("config_not_an_object", kLoads, "config.json", [](Inputs& in) { test::write_file(in.model + "/config.json", "[64, 172]"); });
  add("config_over_16MiB", kAll, "config.json: file is 16777217 bytes, over the 16777216-byte limit", [](Inputs& in) {
    sparse_file(in.model + "/config.json", "{", (uint64_t(16) << 20) + 1);
  });
  add("config_is_a_fifo", kAll, "config.json: is a FIFO", [](Inputs& in) { make_fifo(in.model + "/config.json"); });
  add("config_is_dev_zero", kAll, "config.json: is a character device",
      [](Inputs& in) { make_symlink("/dev/zero", in.model + "/config.json"); });
  add("config_is_a_directory", kAll, "config.json: is a directory", [](Inputs& in) {
    fs::remove(in.model + "/config.json");
    fs::create_directory(in.model + "/config.json");
  });
  add("config_unknown_architecture", kLoads, "Frobnicator", [](Inputs& in) {
    edit_config(in, [](json& c) {
      c["architectures"] = {"FrobnicatorForCausalLM"};
      c["model_type"] = "frobnicator";
    });
  });
  add("config_heads_do_not_divide_hidden_size", kLoads, "config.json", [](Inputs& in) {
    edit_config(in, [](json& c) {
      c.erase("head_dim");
      c["num_attention_heads"] = 7;  // 64 % 7 != 0
    });
  });
  add("config_kv_heads_do_not_divide_heads", kLoads, "config.json", [](Inputs& in) {
    edit_config(in, [](json& c) { c["num_key_value_heads"] = 3; });  // 8 % 3 != 0
  });
  add("config_zero_layers", kLoads, "config.json", [](Inputs& in) {
    edit_config(in, [](json& c) { c["num_hidden_layers"] = 0; });
  });
  add("config_hidden_size_absurd", kLoads, "implausibly large", [](Inputs& in) {
    edit_config(in, [](json& c) { c["hidden_size"] = int64_t(1) << 40; });
  });
  add("config_vocab_size_differs_from_embedding_rows", kLoads, "embed_tokens.weight' has shape [512, 64], expected [500, 64]",
      [](Inputs& in) { edit_config(in, [](json& c) { c["vocab_size"] = 500; }); });
  add("config_declares_a_1TB_embedding", kLoads, "embed_tokens.weight' has shape [512, 64], expected [16777216, 16384]",
      [](Inputs& in) {
        edit_config(in, [](json& c) {
          c["vocab_size"] = 1 << 24;  // 2^24 x 2^14 float32 = 1 TiB
          c["hidden_size"] = 1 << 14;
          c["intermediate_size"] = 1 << 14;
          c["head_dim"] = 1 << 11;
        });
      });
  add("config_bos_id_outside_the_vocabulary", kTokenizes, "bos_token_id 99999 is outside the vocabulary", [](Inputs& in) {
    edit_config(in, [](json& c) { c["bos_token_id"] = 99999; });
  });
  // -- the other JSON files of a model directory
  add("generation_config_not_json", kLoads, "generation_config.json: invalid JSON", [](Inputs& in) {
    test::write_file(in.model + "/generation_config.json", "{\"eos_token_id\": ");
  });
  add("generation_config_over_16MiB", kLoads, "generation_config.json: file is 16777217 bytes, over the 16777216-byte limit",
      [](Inputs& in) { sparse_file(in.model + "/generation_config.json", "{", (uint64_t(16) << 20) + 1); });
  add("generation_config_is_a_fifo", kLoads, "generation_config.json: is a FIFO",
      [](Inputs& in) { make_fifo(in.model + "/generation_config.json"); });
  // tokenizer_config.json is read by the SentencePiece path (add_bos_token) and copied by quantize.
  add("tokenizer_config_over_16MiB", kTokenizes | kQuantize,
      "tokenizer_config.json: file is 16777217 bytes, over the 16777216-byte limit", [](Inputs& in) {
        fs::remove(in.model + "/tokenizer.json");
        sparse_file(in.model + "/tokenizer_config.json", "{", (uint64_t(16) << 20) + 1);
      });
  add("tokenizer_config_not_json", kTokenizes, "tokenizer_config.json: invalid JSON", [](Inputs& in) {
    fs::remove(in.model + "/tokenizer.json");
    test::write_file(in.model + "/tokenizer_config.json", "{\"add_bos_token\": tru");
  });
  add("tokenizer_config_is_a_fifo", kTokenizes | kQuantize, "tokenizer_config.json: is a FIFO", [](Inputs& in) {
    fs::remove(in.model + "/tokenizer.json");
    make_fifo(in.model + "/tokenizer_config.json");
  });
  // special_tokens_map.json is only copied (by quantize), never interpreted.
  add("special_tokens_map_over_16MiB", kQuantize,
      "special_tokens_map.json: file is 16777217 bytes, over the 16777216-byte limit",
      [](Inputs& in) { sparse_file(in.model + "/special_tokens_map.json", "{", (uint64_t(16) << 20) + 1); });
  add("special_tokens_map_is_a_fifo", kQuantize, "special_tokens_map.json: is a FIFO",
      [](Inputs& in) { make_fifo(in.model + "/special_tokens_map.json"); });

  // -- the tokenizer (tokenizer.model removed where tokenizer.json is broken: it would be the
  //    fallback, with a warning)
  auto json_only = [](Inputs& in) { fs::remove(in.model + "/tokenizer.model"); };
  add("tokenizer_missing", kTokenizes, "has neither tokenizer.json nor tokenizer.model", [](Inputs& in) {
    fs::remove(in.model + "/tokenizer.json");
    fs::remove(in.model + "/tokenizer.model");
  });
  add("tokenizer_json_truncated", kTokenizes, "tokenizer.json: invalid JSON", [json_only](Inputs& in) {
    json_only(in);
    const std::string t = test::read_file(in.model + "/tokenizer.json");
    test::write_file(in.model + "/tokenizer.json", t.substr(0, t.size() / 2));
  });
  add("tokenizer_json_empty", kTokenizes, "tokenizer.json: invalid JSON", [json_only](Inputs& in) {
    json_only(in);
    test::write_file(in.model + "/tokenizer.json", "");
  });
  add("tokenizer_json_wrong_types", kTokenizes, "tokenizer.json", [json_only](Inputs& in) {
    json_only(in);
    test::write_file(in.model + "/tokenizer.json", R"({"model": {"type": "BPE", "vocab": 5, "merges": "x"}})");
  });
  add("tokenizer_json_over_1GiB", kTokenizes, "tokenizer.json: file is 1073741825 bytes, over the 1073741824-byte limit",
      [json_only](Inputs& in) {
        json_only(in);
        sparse_file(in.model + "/tokenizer.json", "{", (uint64_t(1) << 30) + 1);
      });
  add("tokenizer_json_is_a_fifo", kTokenizes, "tokenizer.json: is a FIFO", [json_only](Inputs& in) {
    json_only(in);
    make_fifo(in.model + "/tokenizer.json");
  });
  add("tokenizer_json_with_10M_merges", kTokenize | kGenerate,
      "more than 5000000 merges (the limit for a tokenizer.json)", [json_only](Inputs& in) {
        json_only(in);
        tokenizer_with_merges(in.model + "/tokenizer.json", 10'000'000);
      });
  add("tokenizer_model_garbage", kTokenizes, "tokenizer.model: not a valid SentencePiece model", [](Inputs& in) {
    fs::remove(in.model + "/tokenizer.json");
    test::write_file(in.model + "/tokenizer.model", "\x0a\xff\xff\xff\xff\x0f garbage");
  });
  add("tokenizer_model_is_a_fifo", kTokenizes, "tokenizer.model: is a FIFO", [](Inputs& in) {
    fs::remove(in.model + "/tokenizer.json");
    make_fifo(in.model + "/tokenizer.model");
  });
  // The tokenizer knows 512 ids, the model only 256: a text using the others cannot be run.
  add("tokenizer_ids_beyond_the_model_vocabulary", kGenerate | kPerplexity | kEval,
      "vocabulary of 256", [](Inputs& in) {
        shrink_vocab(in, 256);
        in.prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
      });

  // -- 8-bit checkpoints (written by llmint8 quantize, then broken; quantize itself refuses any
  //    8-bit checkpoint, so it is not run on them)
  constexpr unsigned kLoadsInt8 = kLoads & ~unsigned(kQuantize);
  add("int8_checkpoint_scb_nan", kLoadsInt8, "SCB': holds NaN", [](Inputs& in) {
    to_int8_checkpoint(in);
    poke_f32(in, "model.layers.0.self_attn.q_proj.SCB", 3, std::nanf(""));
  });
  add("int8_checkpoint_scb_negative", kLoadsInt8, "q_proj.SCB': row scale -1.500000 at element 3 is negative", [](Inputs& in) {
    to_int8_checkpoint(in);
    poke_f32(in, "model.layers.0.self_attn.q_proj.SCB", 3, -1.5f);
  });
  add("int8_checkpoint_weight_not_int8", kLoadsInt8, "expected I8 next to its SCB", [](Inputs& in) {
    to_int8_checkpoint(in);
    edit_header(in, [](json& h) { h["model.layers.0.self_attn.q_proj.weight"]["dtype"] = "U8"; });
  });
  add("int8_checkpoint_unknown_weight_format", kLoadsInt8, "only weight_format 0", [](Inputs& in) {
    to_int8_checkpoint(in);
    St s = load_st(weights(in));
    s.data[s.header["model.layers.0.self_attn.q_proj.weight_format"]["data_offsets"][0].get<size_t>()] = 2;
    save_st(weights(in), s.header, s.data);
  });

  // -- texts, prompts and data
  add("text_file_empty", kPerplexity, "story.txt': the file is empty", [](Inputs& in) { test::write_file(in.text, ""); });
  add("text_file_missing", kPerplexity | kTokenize, "story.txt", [](Inputs& in) { fs::remove(in.text); });
  add("text_file_is_a_directory", kPerplexity | kTokenize, "is a directory", [](Inputs& in) {
    fs::remove(in.text);
    fs::create_directory(in.text);
  });
  add("text_not_utf8", kPerplexity | kTokenize, "UTF-8", [](Inputs& in) {
    test::write_file(in.text, "Once \xff\xfe upon a time \xc3");
  });
  add("prompt_not_utf8", kGenerate | kTokenizePrompt, "UTF-8", [](Inputs& in) { in.prompt = "Once \xff\xfe upon"; });
  add("prompt_longer_than_the_context", kGenerate, "context", [](Inputs& in) {
    in.prompt.clear();
    for (int i = 0; i < 600; ++i) in.prompt += "hello world ";
  });
  add("eval_data_missing", kEval, "no-data", [](Inputs& in) { in.data = in.root + "/no-data"; });
  add("eval_data_not_jsonl", kEval, "lambada_test.jsonl", [](Inputs& in) {
    in.data = in.root + "/data";
    fs::create_directories(in.data + "/lambada");
    test::write_file(in.data + "/lambada/lambada_test.jsonl", "{\"text\": \"Once upon\"}\nnot json at all\n");
  });

  // -- the model path
  add("model_directory_missing", kAll, "does not exist", [](Inputs& in) { in.model = in.root + "/no-such-model"; });
  add("model_path_is_a_file", kAll, "is not a directory", [](Inputs& in) { in.model = weights(in); });
  add("directory_that_is_not_a_model", kAll, "not-a-model", [](Inputs& in) {
    in.model = in.root + "/not-a-model";
    fs::create_directory(in.model);
    test::write_file(in.model + "/README.md", "# notes\n");
  });
  return r;
}

// ---- the test ---------------------------------------------------------------------------------

class Matrix : public ::testing::TestWithParam<Row> {};

TEST_P(Matrix, Rejects) {
  const Row& row = GetParam();
  if (!fs::exists(kStories + "/config.json") || !fs::exists(kShared + "/data/lambada/lambada_test.jsonl"))
    GTEST_SKIP() << "shared data not found at " << kShared << " (LLMINT8_SHARED_DIR)";
  test::TempDir tmp;
  Inputs in;
  in.root = tmp.str();
  in.model = in.root + "/model";
  in.text = in.root + "/story.txt";
  copy_dir(kStories, in.model);
  test::write_file(in.text,
                   "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.\n");
  row.setup(in);
  if (HasFatalFailure()) return;

  for (unsigned bit = 1; bit <= kTokenizePrompt; bit <<= 1) {
    if (!(row.subs & bit)) continue;
    const Sub sub = Sub(bit);
    const std::vector<std::string> args = args_for(sub, in);
    SCOPED_TRACE(sub_name(sub));
    const test::CliRun r = test::run_cli(args);
    const std::string d = test::describe(args, r);
    EXPECT_FALSE(r.timed_out) << "hung (killed after " << r.seconds << " s): " << d;
    EXPECT_FALSE(r.signaled) << "ended by a signal: " << d;
    EXPECT_EQ(r.exit_code, 1) << d;
    EXPECT_EQ(r.out, "") << "stdout must stay empty: " << d;
    // LLMINT8_MATRIX_VERBOSE=1: show each run's message (to review their wording).
    if (std::getenv("LLMINT8_MATRIX_VERBOSE"))
      std::printf("  %-16s %5.2f s  %s", sub_name(sub), r.seconds, r.err.c_str());
    const std::string prefix = "llmint8: error: ";
    EXPECT_EQ(r.err.rfind(prefix, 0), 0u) << d;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr must be one line: " << d;
    EXPECT_TRUE(r.err.size() > prefix.size() + 1 && r.err.back() == '\n') << d;
    EXPECT_NE(r.err.find(row.mention), std::string::npos) << "stderr does not mention '" << row.mention << "': " << d;
    // Two causes joined (tokenizer.json failed, and so did the tokenizer.model fallback) must
    // differ: the same message twice is noise.
    if (const size_t j = r.err.find("; and "); j != std::string::npos) {
      const std::string first = r.err.substr(prefix.size(), j - prefix.size());
      EXPECT_NE(r.err.substr(j + 6, first.size()), first) << "the same cause twice: " << d;
    }
    if (sub == kQuantize) {
      // Nothing at the output path, and no temporary directory beside it.
      EXPECT_FALSE(fs::exists(fs::symlink_status(in.quantize_out()))) << d;
      for (const auto& e : fs::directory_iterator(in.root))
        EXPECT_NE(e.path().filename().string().rfind("quantized", 0), 0u) << "left behind: " << e.path() << "\n" << d;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BadInput, Matrix, ::testing::ValuesIn(rows()),
                         [](const ::testing::TestParamInfo<Row>& i) { return i.param.name; });

}  // namespace
