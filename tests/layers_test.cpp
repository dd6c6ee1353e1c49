// The layers point one way (docs/design.md §0): core ← io ← tokenizer ← model ←
// data ← train, dual ← eval ← pipeline. A file of src/<layer>/ and the header of
// a src/<layer>/<name>.cpp include only headers of their own layer or of layers
// below it; train and dual, side by side, do not include each other.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "command_line.h"

namespace {

namespace fs = std::filesystem;

// Higher includes lower; equal ranks of different layers are independent.
const std::map<std::string, int> kRank = {{"core", 0},  {"io", 1},   {"tokenizer", 2}, {"model", 3},   {"data", 4},
                                          {"train", 5}, {"dual", 5}, {"eval", 6},      {"pipeline", 7}};

// Headers that are not named after a source file.
const std::map<std::string, std::string> kHeadersWithoutSource = {{"error", "core"}, {"dual", "dual"}};

fs::path source_dir() { return can::testing::source_file("."); }

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> can_includes(const fs::path& file) {
  static const std::regex kInclude(R"(#include "can/([A-Za-z0-9_]+)\.h")");
  const std::string text = read_file(file);
  std::vector<std::string> names;
  for (auto match = std::sregex_iterator(text.begin(), text.end(), kInclude); match != std::sregex_iterator(); ++match) {
    names.push_back((*match)[1]);
  }
  return names;
}

// can/<name>.h -> its layer: the folder of src/<layer>/<name>.cpp.
std::map<std::string, std::string> header_layers() {
  std::map<std::string, std::string> layers = kHeadersWithoutSource;
  for (const auto& [layer, rank] : kRank) {
    for (const auto& entry : fs::directory_iterator(source_dir() / "src" / layer)) {
      if (entry.path().extension() == ".cpp") layers[entry.path().stem().string()] = layer;
    }
  }
  return layers;
}

TEST(Layers, EveryFolderOfSrcIsALayer) {
  for (const auto& entry : fs::directory_iterator(source_dir() / "src")) {
    if (entry.is_directory()) {
      EXPECT_TRUE(kRank.count(entry.path().filename().string())) << entry.path();
    }
  }
}

TEST(Layers, NoIncludePointsUpOrSideways) {
  const auto layers = header_layers();
  std::vector<std::pair<fs::path, std::string>> files;  // (file, its layer)
  for (const auto& entry : fs::directory_iterator(source_dir() / "include" / "can")) {
    const std::string name = entry.path().stem().string();
    ASSERT_TRUE(layers.count(name)) << entry.path() << " is named after no src/<layer>/" << name
                                    << ".cpp; add it to kHeadersWithoutSource";
    files.emplace_back(entry.path(), layers.at(name));
  }
  for (const auto& [layer, rank] : kRank) {
    for (const auto& entry : fs::directory_iterator(source_dir() / "src" / layer)) files.emplace_back(entry.path(), layer);
  }
  for (const auto& [file, layer] : files) {
    for (const std::string& included : can_includes(file)) {
      ASSERT_TRUE(layers.count(included)) << file << " includes can/" << included << ".h, which does not exist";
      const std::string& target = layers.at(included);
      const bool allowed = target == layer || kRank.at(target) < kRank.at(layer);
      EXPECT_TRUE(allowed) << file << " (" << layer << ") includes can/" << included << ".h (" << target << ")";
    }
  }
}

}  // namespace
