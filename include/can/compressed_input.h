// Reading files that may be compressed, by their name: "*.xz" through liblzma,
// "*.gz" through zlib, anything else as it is. PKU-SafeRLHF ships its splits as
// train.jsonl.xz and test.jsonl.xz; every JSON Lines reader (json_lines.h) reads
// through this, so pairs, prompts, SFT data and scores may come compressed.
#pragma once

#include <filesystem>
#include <memory>
#include <streambuf>

namespace can {

// A stream buffer over the file's content, decompressed as it is read. Errors (a file
// that does not open, a corrupt or truncated stream) are can::Error naming the file;
// a decoding error surfaces from the read that meets it.
std::unique_ptr<std::streambuf> open_decompressed(const std::filesystem::path& path);

}  // namespace can
