#include "can/atomic_file.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

#include "can/error.h"

namespace can {

namespace fs = std::filesystem;

namespace {

// fsync of a file, or of a folder (its entries: what was created, renamed, removed).
void sync_to_disk(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, "cannot open '{}' to sync it to disk: {}", path.string(), std::strerror(errno));
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  check(synced == 0, "cannot sync '{}' to disk: {}", path.string(), std::strerror(error));
}

}  // namespace

void rename_durably(const fs::path& from, const fs::path& to) {
  std::error_code renamed;
  fs::rename(from, to, renamed);
  check(!renamed, "cannot rename '{}' to '{}': {}", from.string(), to.string(), renamed.message());
  sync_to_disk(to.has_parent_path() ? to.parent_path() : fs::path("."));
}

void write_file_atomically(const fs::path& path, const std::function<void(std::ostream&)>& write) {
  check(!path.empty(), "cannot write a file with an empty path");
  check(!fs::is_directory(path), "cannot write '{}': it is a directory", path.string());
  try {
    if (path.has_parent_path()) fs::create_directories(path.parent_path());
  } catch (const fs::filesystem_error& error) {
    fail("cannot write '{}': its folder cannot be created: {}", path.string(), error.code().message());
  }
  const fs::path temporary = path.string() + fmt::format(".tmp.{}", static_cast<long>(getpid()));
  try {
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      check(out.good(), "cannot open '{}' for writing: {}", temporary.string(), std::strerror(errno));
      errno = 0;
      write(out);
      out.flush();
      check(out.good(), "cannot write '{}': writing '{}' failed: {}", path.string(), temporary.string(),
            errno != 0 ? std::strerror(errno) : "the stream failed");
      out.close();
      check(!out.fail(), "cannot write '{}': closing '{}' failed: {}", path.string(), temporary.string(),
            std::strerror(errno));
    }
    sync_to_disk(temporary);
    rename_durably(temporary, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
}

void write_directory_atomically(const fs::path& directory, const std::function<void(const fs::path&)>& write) {
  const std::string suffix = fmt::format(".{}", static_cast<long>(getpid()));
  const fs::path temporary = directory.string() + ".tmp" + suffix;
  remove_tree(temporary);
  std::error_code created;
  fs::create_directories(temporary, created);
  check(!created, "cannot write '{}': creating '{}' failed: {}", directory.string(), temporary.string(),
        created.message());
  try {
    write(temporary);
    if (fs::exists(directory)) {
      const fs::path old = directory.string() + ".old" + suffix;
      remove_tree(old);
      rename_durably(directory, old);
      rename_durably(temporary, directory);
      remove_tree(old);
    } else {
      rename_durably(temporary, directory);
    }
  } catch (...) {
    try {
      remove_tree(temporary);
    } catch (const Error&) {  // the first error is the one to report
    }
    throw;
  }
}

namespace {

// The first entry that could not be removed and its errno, for the error message:
// nftw's callback takes no context, and nothing may throw through nftw's C frames.
thread_local bool remove_tree_failed = false;
thread_local std::string remove_tree_failed_path;
thread_local int remove_tree_failed_errno = 0;

int remove_entry(const char* entry, const struct stat*, int, struct FTW*) {
  if (::remove(entry) == 0) return 0;
  remove_tree_failed_errno = errno;
  remove_tree_failed = true;
  remove_tree_failed_path.assign(entry);
  return 1;
}

}  // namespace

void remove_tree(const fs::path& path) {
  // "link/" would make lstat follow the link: strip trailing separators first.
  std::string root = path.string();
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  struct stat status {};
  if (::lstat(root.c_str(), &status) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return;  // nothing there (as std::filesystem::remove_all)
    fail("cannot remove '{}': {}", root, std::strerror(errno));
  }
  // Depth first (children before their directory), without following symbolic links.
  remove_tree_failed = false;
  errno = 0;
  if (::nftw(root.c_str(), remove_entry, /*nopenfd=*/16, FTW_DEPTH | FTW_PHYS) != 0) {
    if (remove_tree_failed) {
      fail("cannot remove '{}': {}", remove_tree_failed_path, std::strerror(remove_tree_failed_errno));
    }
    fail("cannot remove '{}': {}", root, std::strerror(errno));
  }
}

int remove_stale_temporaries(const fs::path& directory) {
  const auto is_temporary = [](const std::string& name) {
    for (const std::string_view marker : {".tmp.", ".old."}) {
      const size_t at = name.rfind(marker);
      if (at == std::string::npos || at == 0 || at + marker.size() == name.size()) continue;
      if (name.find_first_not_of("0123456789", at + marker.size()) == std::string::npos) return true;
    }
    return false;
  };
  std::vector<fs::path> stale;
  for (auto entry = fs::recursive_directory_iterator(directory); entry != fs::recursive_directory_iterator();
       ++entry) {
    if (!is_temporary(entry->path().filename().string())) continue;
    stale.push_back(entry->path());
    entry.disable_recursion_pending();  // removed whole below
  }
  for (const fs::path& path : stale) remove_tree(path);
  return static_cast<int>(stale.size());
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  write_file_atomically(path, [&](std::ostream& out) { out << text; });
}

std::string read_text_file(const fs::path& path) {
  check(!fs::is_directory(path), "'{}' is a directory, not a file", path.string());
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot open '{}' for reading: {}", path.string(), std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  check(!in.bad(), "reading '{}' failed: {}", path.string(), std::strerror(errno));
  return content.str();
}

}  // namespace can
