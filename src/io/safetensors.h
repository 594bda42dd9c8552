// safetensors checkpoints: memory-mapped, zero-copy, validated before anything is trusted.
//
// File layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
// then the data area; offsets are relative to the data area's start.
// Checked on open (each failure throws Error("<file>: <tensor>: <problem>")):
//   N fits in the file, the JSON parses and is an object of objects, dtypes are known, shapes are
//   non-negative and their product * dtype size equals end - begin without overflow, every
//   [begin, end) lies inside the data area, and no two tensors overlap.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llmint8/dtype.h"

namespace llmint8::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // read-only mapping; valid while the owning file is open
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the file holding it (for error messages)
  int64_t numel() const;
  std::string shape_str() const;  // "[64, 172]"
};

// What a validated header describes (see SafetensorsFile::parse).
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // data points into the parsed buffer; file is null
  std::map<std::string, std::string> metadata;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates; throws Error

  // Validates a whole safetensors file image [data, data + size) held in memory (the mapping,
  // or a fuzzer's buffer) and describes its tensors; errors name `path_for_messages`.
  static SafetensorsHeader parse(const uint8_t* data, size_t size,
                                 const std::string& path_for_messages);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Drops the pages of a tensor from this process's resident memory (after it was converted),
  // so that loading never holds the whole 16-bit checkpoint.
  void release_pages(const TensorInfo& t) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Every tensor of a model directory: model.safetensors, or the shards that
// model.safetensors.index.json lists (each shard validated; the index must name existing shards
// and every tensor it maps must be in the shard it names).
class Checkpoint {
 public:
  static std::unique_ptr<Checkpoint> open(const std::string& dir);

  // Parses the text of model.safetensors.index.json into (tensor, shard file name) pairs:
  // the JSON is an object with a "weight_map" object of strings, each a plain file name (no
  // path components). Does not touch the file system; errors name `path_for_messages`.
  static std::vector<std::pair<std::string, std::string>> parse_index(
      std::string_view text, const std::string& path_for_messages);

  const std::string& dir() const { return dir_; }
  const TensorInfo* find(std::string_view name) const;
  // Throws Error("<dir>: tensor '<name>' not found") / ("<file>: tensor '<name>' has shape [..],
  // expected [..]") when `shape` is given and differs.
  const TensorInfo& get(std::string_view name) const;
  const TensorInfo& get(std::string_view name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> names() const;
  // Converts F32/F16/BF16 to float32 into out[numel]; any other dtype throws, and so does a NaN
  // or Inf value (Error naming the file, the tensor and the element).
  static void read_f32(const TensorInfo& t, float* out);
  // The same conversion without the finiteness check (tools that inspect corrupt files).
  static void read_f32_unchecked(const TensorInfo& t, float* out);
  void release_pages(const TensorInfo& t) const;
  // Largest single tensor in bytes (the loader's peak memory over the final model).
  size_t largest_tensor_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>, std::less<>> index_;
};

}  // namespace llmint8::io
