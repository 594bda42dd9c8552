// Reading the small files of a model directory (config.json, tokenizer files, the shard index)
// from untrusted places: size caps checked before anything is read, and only regular files.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>

namespace llmint8::io {

// Caps, far above real files (the largest config.json / tokenizer_config.json of common models
// are tens of KB with chat templates; a 400-shard index is ~100 KB; Gemma's tokenizer.json is
// 34 MB) and far below what would exhaust memory.
inline constexpr uint64_t kMaxConfigFileBytes = uint64_t(16) << 20;     // config.json, generation_config.json,
                                                                          // tokenizer_config.json, special_tokens_map.json
inline constexpr uint64_t kMaxIndexFileBytes = uint64_t(64) << 20;      // model.safetensors.index.json
inline constexpr uint64_t kMaxTokenizerFileBytes = uint64_t(1) << 30;   // tokenizer.json / .model, vocab.json, merges.txt

// The whole content of `path`, which must be a regular file of at most `cap` bytes. The file is
// opened without blocking and checked with fstat before one byte is read, so a directory, a
// FIFO (which would block forever), a device such as /dev/zero (endless) or a file over the cap
// fails at once. Throws Error("<path>: <problem>"), e.g.
//   "<path>: file is 17825793 bytes, over the 16777216-byte limit for a config.json".
std::string read_file_capped(const std::string& path, uint64_t cap);

// What a path of file type `mode` (st_mode) is, for a message about a file that must be regular:
// "is a directory", "is a FIFO", "is a character device", ... ("is not a regular file").
std::string what_it_is(mode_t mode);

// Whether `path` names something (a file, a directory, a FIFO, ...; a symbolic link only when
// its target exists), without opening it.
bool path_exists(const std::string& path);

}  // namespace llmint8::io
