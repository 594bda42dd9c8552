// Streaming safetensors writer and the atomic index writer; see safetensors_writer.h.
#include "io/safetensors_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "llmint8/error.h"

namespace llmint8::io {

namespace {

using ojson = nlohmann::ordered_json;  // keeps declaration order in the header

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Error(path + ": " + problem);
}

std::string errno_text(int e) { return std::strerror(e); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// After a rename the directory entry is only durable once the directory itself is synced.
void fsync_dir(const std::string& path) {
  const int dfd = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;  // best effort: the file's own data is already synced
  ::fsync(dfd);
  ::close(dfd);
}

void write_fd(int fd, const std::string& path, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    // Bounded chunks: some kernels refuse single writes above ~2 GiB.
    const size_t chunk = std::min<size_t>(n, size_t(1) << 30);
    const ssize_t w = ::write(fd, b, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, "write failed: " + errno_text(errno));
    }
    if (w == 0) fail(path, "write failed: no progress");
    b += w;
    n -= size_t(w);
  }
}

std::string dump_json(const ojson& j, const std::string& path) {
  try {
    return j.dump();  // strict: names that are not valid UTF-8 throw
  } catch (const ojson::exception& e) {
    fail(path, std::string("cannot encode header: ") + e.what());
  }
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata)
    : path_(std::move(path)), metadata_(std::move(metadata)) {
  tmp_path_ = path_ + ".tmp-" + std::to_string(::getpid());
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!committed_) abandon();
}

void SafetensorsWriter::abandon() {
  failed_ = true;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (started_) ::unlink(tmp_path_.c_str());
  started_ = false;
}

size_t SafetensorsWriter::add(const std::string& name, DType dtype,
                              const std::vector<int64_t>& shape) {
  if (failed_) fail(path_, "writer failed earlier");
  if (started_) fail(path_, "tensor '" + name + "' declared after writing began");
  if (committed_) fail(path_, "tensor '" + name + "' declared after commit");
  if (name.empty()) fail(path_, "a tensor name is empty");
  if (name == "__metadata__") fail(path_, "tensor name '__metadata__' is reserved");
  for (const Entry& e : entries_)
    if (e.name == name) fail(path_, "tensor '" + name + "' declared twice");
  uint64_t bytes = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) fail(path_, "tensor '" + name + "': negative dimension " + std::to_string(d));
    if (__builtin_mul_overflow(bytes, uint64_t(d), &bytes))
      fail(path_, "tensor '" + name + "': byte size overflows");
  }
  // The reader requires numel and offsets to fit in int64.
  uint64_t end = 0;
  if (__builtin_add_overflow(data_bytes_, bytes, &end) ||
      end > uint64_t(std::numeric_limits<int64_t>::max()) ||
      bytes > std::numeric_limits<size_t>::max())
    fail(path_, "tensor '" + name + "': byte size overflows");
  entries_.push_back(Entry{name, dtype, shape, data_bytes_, end});
  data_bytes_ = end;
  return size_t(bytes);
}

void SafetensorsWriter::start() {
  ojson hdr = ojson::object();
  if (!metadata_.empty()) {
    ojson m = ojson::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    hdr["__metadata__"] = std::move(m);
  }
  for (const Entry& e : entries_) {
    ojson t = ojson::object();
    t["dtype"] = std::string(dtype_name(e.dtype));
    t["shape"] = e.shape;
    t["data_offsets"] = {e.begin, e.end};
    hdr[e.name] = std::move(t);
  }
  std::string text = dump_json(hdr, path_);
  // Pad so that the data area starts 8-byte aligned, as the reference implementation does.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(tmp_path_, "cannot create: " + errno_text(errno));
  started_ = true;
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  try {
    write_all(len, 8);
    write_all(text.data(), text.size());
  } catch (...) {
    abandon();
    throw;
  }
}

void SafetensorsWriter::write_all(const void* p, size_t n) { write_fd(fd_, tmp_path_, p, n); }

void SafetensorsWriter::write(std::string_view name, const void* data) {
  if (failed_) fail(path_, "writer failed earlier");
  if (committed_) fail(path_, "tensor '" + std::string(name) + "' written after commit");
  if (next_ >= entries_.size())
    fail(path_, "tensor '" + std::string(name) + "' written but not declared (or written twice)");
  const Entry& e = entries_[next_];
  if (e.name != name)
    fail(path_, "tensor '" + std::string(name) + "' written out of order: expected '" + e.name +
                    "'");
  if (!started_) start();
  try {
    const size_t n = size_t(e.end - e.begin);
    if (n && !data) fail(path_, "tensor '" + e.name + "': null data");
    write_all(data, n);
  } catch (...) {
    abandon();  // the file is now incomplete: nothing further can make it valid
    throw;
  }
  ++next_;
}

void SafetensorsWriter::commit() {
  if (failed_) fail(path_, "writer failed earlier");
  if (committed_) fail(path_, "committed twice");
  if (next_ != entries_.size())
    fail(path_, "commit with tensor '" + entries_[next_].name + "' not written (" +
                    std::to_string(entries_.size() - next_) + " of " +
                    std::to_string(entries_.size()) + " missing)");
  if (!started_) start();  // no tensors declared
  try {
    if (::fsync(fd_) != 0) fail(tmp_path_, "fsync failed: " + errno_text(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail(tmp_path_, "close failed: " + errno_text(errno));
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
      fail(path_, "cannot rename " + tmp_path_ + " into place: " + errno_text(errno));
  } catch (...) {
    abandon();
    throw;
  }
  committed_ = true;
  fsync_dir(path_);
}

void write_file_atomic(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, "cannot create: " + errno_text(errno));
  try {
    write_fd(fd, tmp, content.data(), content.size());
    if (::fsync(fd) != 0) fail(tmp, "fsync failed: " + errno_text(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail(tmp, "close failed: " + errno_text(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail(path, "cannot rename " + tmp + " into place: " + errno_text(e));
  }
  fsync_dir(path);
}

void write_safetensors_index(const std::string& path, uint64_t total_size,
                             const std::map<std::string, std::string>& weight_map) {
  ojson j = ojson::object();
  j["metadata"] = {{"total_size", total_size}};
  ojson wm = ojson::object();
  for (const auto& [tensor, shard] : weight_map) {
    // The same rule the reader applies (Checkpoint::open).
    if (shard.empty() || shard.find('/') != std::string::npos ||
        shard.find('\\') != std::string::npos || shard.find("..") != std::string::npos ||
        shard == ".")
      fail(path, "tensor '" + tensor + "': shard '" + shard + "' is not a plain file name");
    wm[tensor] = shard;
  }
  j["weight_map"] = std::move(wm);
  std::string text;
  try {
    text = j.dump(2) + "\n";
  } catch (const ojson::exception& e) {
    fail(path, std::string("cannot encode index: ") + e.what());
  }
  write_file_atomic(path, text);
}

}  // namespace llmint8::io
