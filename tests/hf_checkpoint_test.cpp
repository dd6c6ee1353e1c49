#include "can/hf_checkpoint.h"
#include "can/pytorch_bin.h"

#include <gtest/gtest.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/safetensors.h"
#include "temporary_directory.h"

namespace can {
namespace {

using can::testing::error_message;

namespace fs = std::filesystem;
using testing::TemporaryDirectory;

void expect_contains(const std::string& message, const std::vector<std::string>& fragments) {
  ASSERT_FALSE(message.empty()) << "no error";
  for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
}

// Two shards and their index, as Hugging Face's save_pretrained lays them out.
void write_sharded_checkpoint(const fs::path& directory, const nlohmann::json& weight_map) {
  save_safetensors(directory / "model-00001-of-00002.safetensors",
                   {{"model.embed_tokens.weight", torch::arange(6, torch::kFloat).reshape({3, 2})},
                    {"model.norm.weight", torch::ones({2}, torch::kBFloat16)}});
  save_safetensors(directory / "model-00002-of-00002.safetensors", {{"lm_head.weight", torch::full({3, 2}, -1.0f)}});
  write_text_atomically(directory / "model.safetensors.index.json",
                        nlohmann::json{{"metadata", {{"total_size", 52}}}, {"weight_map", weight_map}}.dump(2));
}

const nlohmann::json kWeightMap = {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
                                   {"model.norm.weight", "model-00001-of-00002.safetensors"},
                                   {"lm_head.weight", "model-00002-of-00002.safetensors"}};

TEST(HfCheckpoint, SaveThenLoadRoundTripsConfigAndTensors) {
  TemporaryDirectory temporary;
  const fs::path directory = temporary.path() / "runs" / "policy";
  const nlohmann::json config = {{"hidden_size", 8}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", false}};
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"model.embed_tokens.weight", torch::randn({5, 8})},
      {"model.norm.weight", torch::ones({8}, torch::kBFloat16)},
      {"score_head.weight", torch::randn({1, 8}, torch::kDouble)}};
  save_checkpoint(directory, config, tensors);

  EXPECT_EQ(read_json_file(directory / "config.json"), config);
  EXPECT_NE(read_text_file(directory / "config.json").find("\n  \"hidden_size\": 8"), std::string::npos)
      << "config.json is pretty-printed with a 2-space indent";
  EXPECT_EQ(SafetensorsFile::open(directory / "model.safetensors").metadata().at("format"), "pt");
  const auto loaded = load_checkpoint_tensors(directory);
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    ASSERT_EQ(loaded.count(name), 1u) << name;
    EXPECT_EQ(loaded.at(name).scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(loaded.at(name), tensor)) << name;
  }
}

TEST(HfCheckpoint, LoadsAShardedDirectoryThroughItsIndex) {
  TemporaryDirectory directory;
  write_sharded_checkpoint(directory.path(), kWeightMap);
  const auto loaded = load_checkpoint_tensors(directory.path());
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_TRUE(torch::equal(loaded.at("model.embed_tokens.weight"), torch::arange(6, torch::kFloat).reshape({3, 2})));
  EXPECT_EQ(loaded.at("model.norm.weight").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(torch::equal(loaded.at("lm_head.weight"), torch::full({3, 2}, -1.0f)));
}

TEST(HfCheckpoint, IndexListingATensorMissingFromItsShardNamesBoth) {
  TemporaryDirectory directory;
  nlohmann::json weight_map = kWeightMap;
  weight_map["model.layers.0.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors";
  write_sharded_checkpoint(directory.path(), weight_map);
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                  {"model.safetensors.index.json", "'model.layers.0.mlp.up_proj.weight'",
                   "'model-00002-of-00002.safetensors', which does not hold it"});
}

TEST(HfCheckpoint, ShardHoldingATensorTheIndexDoesNotListIsAnError) {
  TemporaryDirectory directory;
  nlohmann::json weight_map = kWeightMap;
  weight_map.erase("model.norm.weight");
  write_sharded_checkpoint(directory.path(), weight_map);
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                  {"shard 'model-00001-of-00002.safetensors' holds tensor 'model.norm.weight', which the index does "
                   "not list"});
}

TEST(HfCheckpoint, TensorInTheWrongShardIsAnError) {
  TemporaryDirectory directory;
  nlohmann::json weight_map = kWeightMap;
  weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors";
  write_sharded_checkpoint(directory.path(), weight_map);
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                  {"'model.norm.weight'", "model-00002-of-00002.safetensors"});
}

TEST(HfCheckpoint, ShardPathsLeadingOutOfTheModelFolderAreRefused) {
  for (const std::string shard : {"../model-00002-of-00002.safetensors", "/tmp/model-00002-of-00002.safetensors"}) {
    TemporaryDirectory directory;
    nlohmann::json weight_map = kWeightMap;
    write_sharded_checkpoint(directory.path(), weight_map);
    weight_map["model.norm.weight"] = shard;
    can::write_text_atomically(directory.path() / "model.safetensors.index.json",
                               nlohmann::json{{"weight_map", weight_map}}.dump());
    expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                    {"shard '" + shard + "' of tensor 'model.norm.weight' is not a file name inside the model folder"});
  }
}

TEST(HfCheckpoint, MissingShardFileIsNamed) {
  TemporaryDirectory directory;
  write_sharded_checkpoint(directory.path(), kWeightMap);
  fs::remove(directory.path() / "model-00002-of-00002.safetensors");
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                  {"cannot open", "model-00002-of-00002.safetensors"});
}

TEST(HfCheckpoint, IndexWithoutWeightMapIsAnError) {
  TemporaryDirectory directory;
  write_text_atomically(directory.path() / "model.safetensors.index.json", R"({"metadata": {}})");
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                  {"model.safetensors.index.json", "\"weight_map\""});
}

// pytorch_model.bin in torch.save's zip format (LibTorch's pickle_save writes the same);
// the header of a .bin checkpoint knows its files, not its shapes; a safetensors one both.
TEST(HfCheckpoint, PytorchBinStateDictsLoadAndHeadersReadNoData) {
  TemporaryDirectory directory;
  c10::Dict<std::string, at::Tensor> state;
  state.insert("a", at::arange(6, at::kFloat).reshape({2, 3}));
  state.insert("b", at::ones({4}, at::kBFloat16));
  const std::vector<char> bytes = torch::jit::pickle_save(state);
  write_text_atomically(directory.path() / "pytorch_model.bin", std::string(bytes.begin(), bytes.end()));
  const auto tensors = load_checkpoint_tensors(directory.path());
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_TRUE(at::equal(tensors.at("a"), state.at("a")));
  EXPECT_EQ(tensors.at("b").scalar_type(), at::kBFloat16);
  const CheckpointHeader bin = read_checkpoint_header(directory.path());
  EXPECT_EQ(bin.files, std::vector<std::string>{"pytorch_model.bin"});
  EXPECT_FALSE(bin.shapes_known);

  write_sharded_checkpoint(directory.path(), kWeightMap);
  const CheckpointHeader sharded = read_checkpoint_header(directory.path());  // safetensors first
  EXPECT_TRUE(sharded.shapes_known);
  EXPECT_EQ(sharded.files.size(), 2u);
  EXPECT_EQ(sharded.shapes.at("model.embed_tokens.weight"), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(sharded.shapes.size(), 3u);

  // Shards with pytorch_model.bin.index.json: checked against the index as safetensors shards are.
  TemporaryDirectory sharded_bin;
  const auto save_shard = [&](const std::string& file, const std::vector<std::string>& names) {
    c10::Dict<std::string, at::Tensor> shard;
    for (const auto& name : names) shard.insert(name, at::full({2}, static_cast<double>(name.size())));
    const std::vector<char> shard_bytes = torch::jit::pickle_save(shard);
    write_text_atomically(sharded_bin.path() / file, std::string(shard_bytes.begin(), shard_bytes.end()));
  };
  save_shard("pytorch_model-00001-of-00002.bin", {"a", "bb"});
  save_shard("pytorch_model-00002-of-00002.bin", {"ccc"});
  nlohmann::json index = {{"metadata", {{"total_size", 24}}},
                          {"weight_map",
                           {{"a", "pytorch_model-00001-of-00002.bin"},
                            {"bb", "pytorch_model-00001-of-00002.bin"},
                            {"ccc", "pytorch_model-00002-of-00002.bin"}}}};
  write_text_atomically(sharded_bin.path() / "pytorch_model.bin.index.json", index.dump());
  const auto from_shards = load_checkpoint_tensors(sharded_bin.path());
  ASSERT_EQ(from_shards.size(), 3u);
  EXPECT_EQ(from_shards.at("ccc")[0].item<float>(), 3.0f);
  EXPECT_EQ(read_checkpoint_header(sharded_bin.path()).files.size(), 2u);
  index["weight_map"]["dd"] = "pytorch_model-00002-of-00002.bin";
  write_text_atomically(sharded_bin.path() / "pytorch_model.bin.index.json", index.dump());
  expect_contains(error_message([&] { load_checkpoint_tensors(sharded_bin.path()); }),
                  {"pytorch_model.bin.index.json", "'dd'", "pytorch_model-00002-of-00002.bin", "does not hold it"});

  const std::vector<char> list = torch::jit::pickle_save(c10::List<at::Tensor>({at::ones({1})}));
  write_text_atomically(directory.path() / "list.bin", std::string(list.begin(), list.end()));
  expect_contains(error_message([&] { load_pytorch_bin(directory.path() / "list.bin"); }),
                  {"list.bin", "not a state dict"});
  write_text_atomically(directory.path() / "text.bin", "not a zip archive");
  expect_contains(error_message([&] { load_pytorch_bin(directory.path() / "text.bin"); }),
                  {"text.bin", "not a file in torch.save's zip format"});
}

// A torch.save archive around `pickle` as data.pkl, written by LibTorch's own archive writer.
void write_archive_with_pickle(const std::filesystem::path& path, const std::string& pickle) {
  std::vector<char> bytes;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) {
    const auto* begin = static_cast<const char*>(data);
    bytes.insert(bytes.end(), begin, begin + size);
    return size;
  });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeEndOfFile();
  write_text_atomically(path, std::string(bytes.begin(), bytes.end()));
}

// LibTorch's unpickler grows its memo table to the largest id a PUT names: a damaged
// id (here 2^31 − 1, 32 GiB of table) is refused before it reads the pickle.
TEST(HfCheckpoint, APytorchBinPickleNamingAMemoIdPastItsLengthIsRefusedBeforeUnpickling) {
  TemporaryDirectory directory;
  // A pickle's bytes from a string literal, zero bytes included.
  const auto pickle = [](const auto& literal) { return std::string(literal, sizeof literal - 1); };
  const std::string empty_dict = pickle("\x80\x02}");  // PROTO 2, EMPTY_DICT
  write_archive_with_pickle(directory.path() / "damaged.bin", empty_dict + pickle("r\xff\xff\xff\x7f."));
  expect_contains(error_message([&] { load_pytorch_bin(directory.path() / "damaged.bin"); }),
                  {"damaged.bin", "data.pkl names memo entry 2147483647 in a pickle of 9 bytes"});
  // The same pickle with memo id 0 is a valid empty state dict.
  write_archive_with_pickle(directory.path() / "empty.bin", empty_dict + pickle("r\0\0\0\0."));
  EXPECT_TRUE(load_pytorch_bin(directory.path() / "empty.bin").empty());
  // An id after strings of 4- and 1-byte length fields is found where it is.
  write_archive_with_pickle(directory.path() / "late.bin",
                            empty_dict + pickle("X\x02\0\0\0" "abq\x00\x8c\x01" "cq\x01" "0r\0\0\0\x01."));
  expect_contains(error_message([&] { load_pytorch_bin(directory.path() / "late.bin"); }),
                  {"late.bin", "memo entry 16777216"});
}

// The unpickler allocates a string at the length its opcode states before reading it: a
// length past the pickle's end (here 4 GiB − 18) is refused before unpickling.
TEST(HfCheckpoint, APytorchBinPickleClaimingMoreBytesThanItHoldsIsRefusedBeforeUnpickling) {
  TemporaryDirectory directory;
  const auto pickle = [](const auto& literal) { return std::string(literal, sizeof literal - 1); };
  write_archive_with_pickle(directory.path() / "damaged.bin", pickle("\x80\x02}X\xee\xff\xff\xff" "ab."));
  expect_contains(error_message([&] { load_pytorch_bin(directory.path() / "damaged.bin"); }),
                  {"damaged.bin", "data.pkl's opcode at byte 3 claims 4294967282 bytes where 7 remain"});
}

// A view with more elements than its storage holds (stride 0) is no stored weight, and
// copying it would allocate without bound.
TEST(HfCheckpoint, APytorchBinTensorOverlappingItselfIsRefused) {
  TemporaryDirectory directory;
  c10::Dict<std::string, at::Tensor> state;
  state.insert("w", at::arange(4, at::kFloat).expand({1000, 4}));  // strides [0, 1] over 4 floats
  const std::vector<char> bytes = torch::jit::pickle_save(state);
  write_text_atomically(directory.path() / "expanded.bin", std::string(bytes.begin(), bytes.end()));
  expect_contains(error_message([&] { load_pytorch_bin(directory.path() / "expanded.bin"); }),
                  {"expanded.bin", "tensor 'w' of shape [1000, 4] has more elements than its storage of 16 bytes"});
}

TEST(HfCheckpoint, DirectoryWithoutWeightsSaysWhatWasLookedFor) {
  TemporaryDirectory directory;
  write_text_atomically(directory.path() / "config.json", "{}");
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path()); }),
                  {directory.path().string(), "none of model.safetensors, model.safetensors.index.json, "
                                              "pytorch_model.bin and pytorch_model.bin.index.json"});
  expect_contains(error_message([&] { load_checkpoint_tensors(directory.path() / "absent"); }),
                  {(directory.path() / "absent").string(), "does not exist"});
}

TEST(HfCheckpoint, BadConfigJsonNamesTheFileAndPosition) {
  TemporaryDirectory directory;
  const fs::path path = directory.path() / "config.json";
  write_text_atomically(path, "{\n  \"hidden_size\": 8,\n  \"vocab_size\": ,\n}\n");
  expect_contains(error_message([&] { read_json_file(path); }), {path.string(), "line 3"});
  expect_contains(error_message([&] { read_json_file(directory.path() / "absent.json"); }), {"absent.json"});
}

}  // namespace
}  // namespace can
