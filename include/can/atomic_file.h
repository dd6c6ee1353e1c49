// Atomic, durable writes: nothing CAN writes is ever seen half-written. Content goes
// to a temporary file beside the target, is flushed and synced to disk, and is renamed
// over the target only when complete; the folder is synced after the rename, so a
// finished write survives a crash of the machine, not only of the program. On any
// error the temporary is removed and the target is left as it was.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace can {

// Calls `write` with a binary stream onto a temporary file, then renames it to `path`.
void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);

// Calls `write` with an empty temporary directory beside `directory`, then renames it
// to `directory`. An existing `directory` is replaced: it is renamed aside first and
// removed after, so a crash between the two renames leaves it as "<directory>.old.<pid>".
void write_directory_atomically(const std::filesystem::path& directory,
                                const std::function<void(const std::filesystem::path& temporary)>& write);

// Renames `from` (a file or a folder) to `to`, then syncs the folder holding `to` so
// that the rename is on disk. Errors name both paths.
void rename_durably(const std::filesystem::path& from, const std::filesystem::path& to);

// Removes, under `directory` (recursively), every temporary the writers above leave
// when their process dies mid-write: entries named "<name>.tmp.<pid>" or
// "<name>.old.<pid>". Only for a folder no live process writes into (can-train calls
// it on its run directory under the run lock). Returns how many it removed.
int remove_stale_temporaries(const std::filesystem::path& directory);

// Convenience for text content.
void write_text_atomically(const std::filesystem::path& path, const std::string& text);

// Removes `path` and everything under it (nothing to do when it does not exist);
// symbolic links are removed, never followed. Use it instead of
// std::filesystem::remove_all: the PyTorch wheels' libtorch exports its own copy of
// libstdc++'s filesystem code, and with LibTorch 2.11 a program's remove_all bound to
// it called a null pointer on a non-empty directory (seen on the GPU machine).
// Throws can::Error naming the entry that could not be removed.
void remove_tree(const std::filesystem::path& path);

// Reads a whole file; the error names the file.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace can
