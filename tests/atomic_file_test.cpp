// Atomic files and directories, and remove_tree (CAN's replacement for
// std::filesystem::remove_all, which crashed against LibTorch 2.11's exported copy).
#include "can/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "temporary_directory.h"

namespace can {
namespace {

namespace fs = std::filesystem;
using testing::TemporaryDirectory;

TEST(RemoveTree, RemovesNestedFilesAndFoldersButNeverFollowsALink) {
  const TemporaryDirectory directory;
  const fs::path tree = directory.path() / "tree";
  const fs::path kept = directory.path() / "kept";
  write_text_atomically(kept / "precious.txt", "keep me\n");
  write_text_atomically(tree / "a.txt", "a\n");
  write_text_atomically(tree / "sub" / "b.txt", "b\n");
  write_text_atomically(tree / "sub" / "deeper" / "c.txt", "c\n");
  fs::create_directories(tree / "empty");
  fs::create_directory_symlink(kept, tree / "sub" / "link_to_kept");

  remove_tree(tree);
  EXPECT_FALSE(fs::exists(fs::symlink_status(tree)));
  EXPECT_EQ(read_text_file(kept / "precious.txt"), "keep me\n");  // the link went, not what it pointed to
}

TEST(RemoveTree, RemovesASingleFileAndIgnoresAMissingPath) {
  const TemporaryDirectory directory;
  const fs::path file = directory.path() / "file.txt";
  write_text_atomically(file, "x");
  remove_tree(file);
  EXPECT_FALSE(fs::exists(file));
  EXPECT_NO_THROW(remove_tree(directory.path() / "never-there"));
}

TEST(WriteDirectoryAtomically, ReplacesAnExistingNonEmptyDirectoryAndLeavesNoTemporaries) {
  const TemporaryDirectory directory;
  const fs::path target = directory.path() / "model";
  write_directory_atomically(target, [](const fs::path& temporary) {
    write_text_atomically(temporary / "old.txt", "old");
    write_text_atomically(temporary / "nested" / "old.txt", "old");
  });
  write_directory_atomically(target, [](const fs::path& temporary) { write_text_atomically(temporary / "new.txt", "new"); });
  EXPECT_EQ(read_text_file(target / "new.txt"), "new");
  EXPECT_FALSE(fs::exists(target / "old.txt"));
  EXPECT_FALSE(fs::exists(target / "nested"));
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(directory.path())) ++entries;
  EXPECT_EQ(entries, 1);  // no "<model>.tmp.<pid>" or "<model>.old.<pid>" left behind
}

}  // namespace
// Found by scripts/kill-at-syscalls.sh: a SIGKILL at the rename of data.partial/world.json
// left world.json.tmp.<pid>, which the resumed stage carried into its finished folder.
TEST(RemoveStaleTemporaries, RemovesWhatAKilledWriterLeftAndNothingElse) {
  can::testing::TemporaryDirectory folder;
  const fs::path run = folder.path();
  for (const char* file : {"stages.json.tmp.123", "dpo.partial/model.safetensors.tmp.7", "keep.json",
                           "dpo.partial/keep.tmp", "dpo.partial/keep.tmp.", "dpo.partial/keep.tmp.12a", ".tmp.5",
                           "dpo.partial/checkpoints/step-50.tmp.9/optimizer.pt", "dpo.partial/checkpoints/step-40/x"}) {
    fs::create_directories((run / file).parent_path());
    std::ofstream(run / file) << "x";
  }
  fs::create_directories(run / "reference.old.44" / "inner");
  EXPECT_EQ(can::remove_stale_temporaries(run), 4);
  for (const char* gone : {"stages.json.tmp.123", "dpo.partial/model.safetensors.tmp.7",
                           "dpo.partial/checkpoints/step-50.tmp.9", "reference.old.44"}) {
    EXPECT_FALSE(fs::exists(run / gone)) << gone;
  }
  for (const char* kept : {"keep.json", "dpo.partial/keep.tmp", "dpo.partial/keep.tmp.", "dpo.partial/keep.tmp.12a",
                           ".tmp.5", "dpo.partial/checkpoints/step-40/x"}) {
    EXPECT_TRUE(fs::exists(run / kept)) << kept;
  }
}

}  // namespace can
