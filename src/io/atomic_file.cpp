#include "can/atomic_file.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <sstream>

#include "can/error.h"

namespace can {

namespace fs = std::filesystem;

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
      write(out);
      out.flush();
      check(out.good(), "writing '{}' failed (disk full?)", temporary.string());
    }
    std::error_code renamed;
    fs::rename(temporary, path, renamed);
    check(!renamed, "cannot write '{}': renaming '{}' onto it failed: {}", path.string(), temporary.string(),
          renamed.message());
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
  fs::create_directories(temporary);
  try {
    write(temporary);
    if (fs::exists(directory)) {
      const fs::path old = directory.string() + ".old" + suffix;
      remove_tree(old);
      fs::rename(directory, old);
      fs::rename(temporary, directory);
      remove_tree(old);
    } else {
      fs::rename(temporary, directory);
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
