// Streaming safetensors writer: the header (which lists every tensor with its offsets) comes
// before the data, so tensors are declared first and then written one at a time in declaration
// order -- the caller never holds more than the tensor it is writing.
//
//   SafetensorsWriter w("out/model.safetensors", {{"format", "pt"}});
//   w.add("a", DType::I8, {4096, 4096});
//   w.add("b", DType::F32, {4096});
//   w.write("a", a_bytes);            // streams to out/model.safetensors.tmp-<pid>
//   w.write("b", b_bytes);
//   w.commit();                       // fsync, rename to the final path, fsync the directory
//
// The final path only ever holds a complete file: a writer destroyed before commit() (an
// exception, a failed write) removes its temporary file and leaves the final path untouched.
// Layout as the reference implementation writes it: u64 little-endian header length, the JSON
// header padded with spaces to a multiple of 8 bytes, then the tensors back to back.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "llmint8/dtype.h"

namespace llmint8::io {

class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();  // without commit(): removes the temporary file
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Declares the next tensor; returns its size in bytes. Only before the first write().
  // Throws Error for an empty, reserved ("__metadata__") or repeated name, a negative dimension,
  // or a byte size that overflows.
  size_t add(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  // Writes the next declared tensor's bytes (exactly its declared size); `name` must be the next
  // one in declaration order. The first call creates the temporary file and writes the header.
  void write(std::string_view name, const void* data);
  // All declared tensors must have been written. Makes the file durable and moves it into place.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_path_; }
  // Bytes of tensor data declared so far (the index's "total_size").
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  void start();         // creates the temp file and writes the header
  void abandon();       // closes and removes the temp file
  void write_all(const void* p, size_t n);

  std::string path_;
  std::string tmp_path_;
  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  uint64_t data_bytes_ = 0;
  size_t next_ = 0;      // index of the next tensor to write
  int fd_ = -1;
  bool started_ = false;
  bool committed_ = false;
  bool failed_ = false;  // a write failed or was abandoned: the temp file is gone for good
};

// Writes a sharded checkpoint's index (Hugging Face's model.safetensors.index.json:
// {"metadata": {"total_size": N}, "weight_map": {tensor: shard file name}}) atomically:
// temporary file, fsync, rename. Shard names must be plain file names.
void write_safetensors_index(const std::string& path, uint64_t total_size,
                             const std::map<std::string, std::string>& weight_map);

// Replaces `path` with `content` atomically (temporary file in the same directory, fsync, rename).
void write_file_atomic(const std::string& path, std::string_view content);

}  // namespace llmint8::io
