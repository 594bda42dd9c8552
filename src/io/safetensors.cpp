// safetensors reader: see safetensors.h for the format and what is validated.
#include <cmath>
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/read_file.h"
#include "llmint8/error.h"

namespace llmint8::io {

// Tensor bytes are little-endian on disk and handed out zero-copy.
static_assert(std::endian::native == std::endian::little, "llmint8 assumes a little-endian host");

namespace {

using json = nlohmann::json;

// Same cap as the reference implementation: a header this large is corrupt or hostile, and
// refusing it keeps the JSON parse from consuming unbounded memory.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests 3 deep (root -> tensor -> shape); anything far deeper is not a
// safetensors header, and the cap bounds the parser's work on hostile input.
constexpr int kMaxJsonDepth = 32;

// Error escapes control characters, so quoting names from the file keeps messages one line.
[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Error(path + ": " + problem);
}
[[noreturn]] void fail_tensor(const std::string& path, const std::string& name,
                              const std::string& problem) {
  throw Error(path + ": tensor '" + name + "': " + problem);
}

std::string errno_text(int e) { return std::strerror(e); }

std::string too_short(size_t size) {
  return "file is " + std::to_string(size) +
         " bytes, shorter than the 8-byte header length (not a safetensors file)";
}

struct JsonStructureError {
  std::string problem;
};

// Parses with duplicate-key detection (nlohmann keeps the last of equal keys silently, which
// would hide a second definition of a tensor) and a nesting cap.
json parse_json_strict(const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
        if (depth >= kMaxJsonDepth)
          throw JsonStructureError{"JSON nested deeper than " + std::to_string(kMaxJsonDepth)};
        keys.emplace_back();
        break;
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          throw JsonStructureError{"JSON nested deeper than " + std::to_string(kMaxJsonDepth)};
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second)
          throw JsonStructureError{"duplicate JSON key '" + parsed.get<std::string>() + "'" +
                                   (depth == 1 ? " (tensor defined twice)" : "")};
        break;
      default:
        break;
    }
    return true;
  };
  return json::parse(begin, end, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
}

// A JSON integer that is >= 0 and fits in int64 (so it can be a shape entry or offset).
bool json_nonneg_int(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
    *out = u;
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = uint64_t(s);
    return true;
  }
  return false;
}

std::string json_short(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

int64_t TensorInfo::numel() const {
  // Validated on open: the product fits in int64 -- unless a zero dimension follows dimensions
  // whose partial product would overflow ([2^62, 4, 0] is a valid empty tensor), so test for 0
  // first.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

SafetensorsHeader SafetensorsFile::parse(const uint8_t* base, size_t size,
                                         const std::string& path) {
  if (size < 8) fail(path, too_short(size));
  SafetensorsHeader h;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];  // little-endian regardless of host
  if (n > size - 8)
    fail(path, "header length " + std::to_string(n) + " exceeds the file size " +
                   std::to_string(size) + " (truncated or not a safetensors file)");
  if (n > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(n) + " exceeds the " +
                   std::to_string(kMaxHeaderBytes) + "-byte limit");
  const char* hdr = reinterpret_cast<const char*>(base + 8);
  const uint8_t* data = base + 8 + n;
  const uint64_t data_size = size - 8 - n;

  json root;
  try {
    root = parse_json_strict(hdr, hdr + n);
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON header: ") + e.what());
  } catch (const JsonStructureError& e) {
    fail(path, "invalid header: " + e.problem);
  }
  if (!root.is_object()) fail(path, "header is JSON " + std::string(root.type_name()) +
                                        ", expected an object of tensors");

  h.tensors.reserve(root.size());
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(path, "__metadata__ entry '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (name.empty()) fail(path, "a tensor has an empty name");
    if (!v.is_object()) fail_tensor(path, name, "entry is not an object");

    TensorInfo t;
    t.name = name;

    const auto dt = v.find("dtype");
    if (dt == v.end()) fail_tensor(path, name, "missing \"dtype\"");
    if (!dt->is_string()) fail_tensor(path, name, "\"dtype\" is not a string");
    if (!parse_dtype(dt->get_ref<const std::string&>(), &t.dtype))
      fail_tensor(path, name, "unknown dtype \"" + dt->get<std::string>() + "\"");

    const auto sh = v.find("shape");
    if (sh == v.end()) fail_tensor(path, name, "missing \"shape\"");
    if (!sh->is_array()) fail_tensor(path, name, "\"shape\" is not an array");
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      uint64_t dim = 0;
      if (!json_nonneg_int(d, &dim))
        fail_tensor(path, name, "shape entry " + json_short(d) +
                                    " is not a non-negative 64-bit integer");
      t.shape.push_back(int64_t(dim));
      // numel must stay representable as int64 (TensorInfo::numel's type)
      if (!overflow && (__builtin_mul_overflow(numel, dim, &numel) ||
                        numel > uint64_t(std::numeric_limits<int64_t>::max())))
        overflow = true;
    }
    // A zero dimension makes the product 0 however large the others are.
    if (overflow && std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
      overflow = false;
      numel = 0;
    }
    uint64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &nbytes))
      fail_tensor(path, name, "shape " + t.shape_str() + " overflows a 64-bit byte count");

    const auto off = v.find("data_offsets");
    if (off == v.end()) fail_tensor(path, name, "missing \"data_offsets\"");
    uint64_t begin = 0, end = 0;
    if (!off->is_array() || off->size() != 2 || !json_nonneg_int((*off)[0], &begin) ||
        !json_nonneg_int((*off)[1], &end))
      fail_tensor(path, name, "\"data_offsets\" " + json_short(*off) +
                                  " is not [begin, end] of non-negative integers");
    if (begin > end)
      fail_tensor(path, name, "data_offsets [" + std::to_string(begin) + ", " +
                                  std::to_string(end) + "] has begin > end");
    if (end - begin != nbytes)
      fail_tensor(path, name, "data_offsets span " + std::to_string(end - begin) +
                                  " bytes but shape " + t.shape_str() + " of " +
                                  std::string(dtype_name(t.dtype)) + " needs " +
                                  std::to_string(nbytes));
    if (end > data_size)
      fail_tensor(path, name, "data_offsets [" + std::to_string(begin) + ", " +
                                  std::to_string(end) + "] extend past the data area of " +
                                  std::to_string(data_size) + " bytes (file truncated?)");
    t.data = data + begin;
    t.nbytes = size_t(nbytes);
    h.tensors.push_back(std::move(t));
  }

  // Overlap check over the occupied byte ranges, in offset order. Zero-size tensors occupy no
  // bytes and may sit anywhere inside the data area.
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : h.tensors)
    if (t.nbytes) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->data < b->data; });
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorInfo* prev = order[i - 1];
    if (prev->data + prev->nbytes > order[i]->data)
      fail_tensor(path, order[i]->name, "data overlaps tensor '" + prev->name + "'");
  }
  return h;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: a FIFO in place of the file would otherwise block the open forever (it is then
  // refused as not a regular file).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, "cannot stat: " + errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, what_it_is(st.st_mode) + ", expected a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {  // before mmap, which refuses an empty file
    ::close(fd);
    fail(path, too_short(size_));
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(path, "cannot mmap: " + errno_text(map_errno));
  }

  // From here on the destructor does not run if we throw, so unmap on any failure.
  try {
    SafetensorsHeader h = parse(static_cast<const uint8_t*>(map_), size_, path_);
    tensors_ = std::move(h.tensors);
    metadata_ = std::move(h.metadata);
    for (TensorInfo& t : tensors_) t.file = &path_;
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void SafetensorsFile::release_pages(const TensorInfo& t) const {
  const auto* base = static_cast<const uint8_t*>(map_);
  // Only ever advise pages of this mapping: MADV_DONTNEED on anonymous memory would zero it.
  if (!base || t.nbytes == 0 || t.data < base || t.data + t.nbytes > base + size_) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  // Rounding outwards may drop pages shared with neighbouring tensors; that is harmless because
  // the mapping is read-only and file-backed: a later access faults the page back in from disk.
  uintptr_t lo = uintptr_t(t.data) & ~(page - 1);
  uintptr_t hi = (uintptr_t(t.data) + t.nbytes + page - 1) & ~(page - 1);
  lo = std::max(lo, uintptr_t(base));  // the mapping itself is page-aligned
  hi = std::min(hi, (uintptr_t(base) + size_ + page - 1) & ~(page - 1));
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);  // advisory: errors ignored
}

// ---------------------------------------------------------------------------------------------

namespace {

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// Shard names come from a file on disk: only plain names inside the checkpoint directory.
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos &&
         s.find("..") == std::string::npos;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> Checkpoint::parse_index(
    std::string_view text, const std::string& index_path) {
  json idx;
  try {
    idx = parse_json_strict(text.data(), text.data() + text.size());
  } catch (const json::exception& e) {
    fail(index_path, std::string("invalid JSON: ") + e.what());
  } catch (const JsonStructureError& e) {
    fail(index_path, "invalid index: " + e.problem);
  }
  if (!idx.is_object()) fail(index_path, "not a JSON object");
  const auto wm = idx.find("weight_map");
  if (wm == idx.end()) fail(index_path, "missing \"weight_map\"");
  if (!wm->is_object()) fail(index_path, "\"weight_map\" is not an object");

  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(wm->size());
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      fail(index_path, "weight_map entry for tensor '" + it.key() + "' is not a string");
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (!plain_file_name(shard))
      fail(index_path, "tensor '" + it.key() + "': shard name '" + shard +
                           "' is not a plain file name inside the checkpoint directory");
    out.emplace_back(it.key(), shard);
  }
  return out;
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& dir) {
  auto ck = std::make_unique<Checkpoint>();
  ck->dir_ = dir;
  const std::string base = dir.empty() ? std::string(".") : dir;
  const std::string single = base + "/model.safetensors";
  const std::string index_path = base + "/model.safetensors.index.json";

  auto add_file = [&](std::unique_ptr<SafetensorsFile> f) -> const SafetensorsFile* {
    for (const TensorInfo& t : f->tensors()) {
      auto [it, inserted] = ck->index_.try_emplace(t.name, f.get(), &t);
      if (!inserted)
        fail(f->path(), "tensor '" + t.name + "' is also in " + it->second.first->path());
    }
    ck->files_.push_back(std::move(f));
    return ck->files_.back().get();
  };

  if (file_exists(single)) {
    add_file(std::make_unique<SafetensorsFile>(single));
    return ck;
  }
  if (!file_exists(index_path))
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json");

  const auto weight_map = parse_index(read_file_capped(index_path, kMaxIndexFileBytes), index_path);
  std::map<std::string, const SafetensorsFile*> shards;  // each shard opened once
  for (const auto& [tensor, shard] : weight_map) {
    if (shards.count(shard)) continue;
    const std::string shard_path = base + "/" + shard;
    if (!file_exists(shard_path))
      fail(index_path, "tensor '" + tensor + "': shard '" + shard + "' does not exist");
    shards[shard] = add_file(std::make_unique<SafetensorsFile>(shard_path));
  }
  for (const auto& [tensor, shard] : weight_map) {
    if (!shards.at(shard)->find(tensor))
      fail(index_path, "tensor '" + tensor + "' is mapped to shard '" + shard +
                           "' which does not contain it");
  }
  return ck;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second.second;
}

const TensorInfo& Checkpoint::get(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) throw Error(dir_ + ": tensor '" + std::string(name) + "' not found");
  return *t;
}

const TensorInfo& Checkpoint::get(std::string_view name, const std::vector<int64_t>& shape) const {
  const TensorInfo& t = get(name);
  if (t.shape != shape) {
    TensorInfo want;
    want.shape = shape;
    throw Error(*t.file + ": tensor '" + t.name + "' has shape " + t.shape_str() + ", expected " +
                want.shape_str());
  }
  return t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

namespace {
// Weights must be finite: a NaN or Inf in a checkpoint is corruption, and would silently poison
// every output (and the int8 row scales) rather than fail.
void check_finite(const TensorInfo& t, const float* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      throw Error((t.file ? *t.file : std::string("?")) + ": tensor '" + t.name + "': holds " +
                  (std::isnan(v[i]) ? "NaN" : "Inf") + " at element " + std::to_string(i) +
                  " (weights must be finite)");
}
}  // namespace

void Checkpoint::read_f32(const TensorInfo& t, float* out) {
  read_f32_unchecked(t, out);
  check_finite(t, out, size_t(t.numel()));
}

void Checkpoint::read_f32_unchecked(const TensorInfo& t, float* out) {
  const size_t n = size_t(t.numel());
  // memcpy per element: the data area gives no alignment guarantee.
  switch (t.dtype) {
    case DType::F32:
      if (n) std::memcpy(out, t.data, n * sizeof(float));
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        f16 h;
        std::memcpy(&h.bits, t.data + 2 * i, 2);
        out[i] = to_float(h);
      }
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        bf16 h;
        std::memcpy(&h.bits, t.data + 2 * i, 2);
        out[i] = to_float(h);
      }
      return;
    default:
      throw Error((t.file ? *t.file : std::string("?")) + ": tensor '" + t.name + "': dtype " +
                  std::string(dtype_name(t.dtype)) + " cannot be read as float32");
  }
}

void Checkpoint::release_pages(const TensorInfo& t) const {
  const auto it = index_.find(t.name);
  if (it != index_.end() && it->second.second == &t) it->second.first->release_pages(t);
}

size_t Checkpoint::largest_tensor_bytes() const {
  size_t m = 0;
  for (const auto& f : files_)
    for (const TensorInfo& t : f->tensors()) m = std::max(m, t.nbytes);
  return m;
}

}  // namespace llmint8::io
