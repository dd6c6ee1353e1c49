// The tokenizer in a LibTorch process. This binary links LibTorch (through `can`)
// and uses it, but never links sentencepiece: `ldd build/tokenizer_test` lists
// libtorch*.so and no libsentencepiece. Sentencepiece comes in at run time in the
// backend's own link namespace (docs/design.md §7); linked into one namespace with
// LibTorch, the process dies before main or on protobuf's version check.
// Reference outputs come from sentencepiece's own command-line tools
// (spm_train, spm_encode) run on the same files.
#include "can/tokenizer.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {
namespace {

namespace fs = std::filesystem;

constexpr int kBpeVocab = 450;
constexpr int kUnigramVocab = 330;

// A few hundred varied sentences: letters with and without accents, digits,
// punctuation. Fixed generator, so every run trains on the same bytes.
std::vector<std::string> corpus_sentences() {
  const std::vector<std::string> subjects = {"The cat",  "A dog",          "My neighbour",   "The old teacher",
                                             "Our team", "The café owner", "A small robot",  "The river",
                                             "Jürgen",   "The children",   "Every engineer", "Nobody"};
  const std::vector<std::string> verbs = {"eats",  "watches", "builds", "paints", "carries", "remembers",
                                          "sells", "finds",   "fixes",  "counts", "hides",   "explains"};
  const std::vector<std::string> objects = {
      "a red apple", "three blue boxes", "the morning news", "42 paper planes", "an ancient map", "the quiet garden",
      "fresh bread", "a strange signal", "the 7th chapter",  "naïve questions", "1,500 coins",    "the broken clock"};
  const std::vector<std::string> endings = {".",
                                            "!",
                                            "?",
                                            " today.",
                                            " again, slowly.",
                                            " before 9:30.",
                                            " (twice).",
                                            " because it rains.",
                                            " with great care.",
                                            " at the crêperie."};
  std::mt19937 engine(2024);
  const auto pick = [&](const std::vector<std::string>& options) { return options[engine() % options.size()]; };
  std::vector<std::string> sentences;
  for (int i = 0; i < 400; ++i) {
    sentences.push_back(pick(subjects) + " " + pick(verbs) + " " + pick(objects) + pick(endings));
  }
  return sentences;
}

// Text the models never saw: new words, non-Latin scripts, an emoji (only byte
// fallback can encode those), odd spacing, an empty line.
const std::vector<std::string> kHeldOutLines = {
    "The cat eats a red apple.",
    "Zebras negotiate 98765 contracts in Zürich!",
    "在北京的咖啡馆 😀 naïve?",
    "  leading,   doubled   and trailing spaces  ",
    "",
    "Ωμέγα — ½ ﬁne ligatures",
    "Nobody fixes the broken clock with great care.",
};

void write_lines(const fs::path& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::binary);
  for (const auto& line : lines) out << line << '\n';
}

std::vector<std::vector<int64_t>> read_id_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::vector<int64_t>> lines;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<int64_t> ids;
    for (int64_t id = 0; fields >> id;) ids.push_back(id);
    lines.push_back(ids);
  }
  return lines;
}

void run_command(const std::string& command) {
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command;
}

TokenizerTrainOptions train_options(const fs::path& corpus, const fs::path& prefix, const std::string& type) {
  TokenizerTrainOptions options;
  options.input_file = corpus.string();
  options.model_prefix = prefix.string();
  options.model_type = type;
  options.vocab_size = type == "bpe" ? kBpeVocab : kUnigramVocab;
  return options;
}

// The same flags Tokenizer::train gives sentencepiece, for spm_train.
std::string spm_train_command(const TokenizerTrainOptions& options) {
  return fmt::format(
      "spm_train --input='{}' --model_prefix='{}' --model_type={} --vocab_size={} --character_coverage=1 "
      "--byte_fallback=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=3 --num_threads=1 --minloglevel=2",
      options.input_file, options.model_prefix, options.model_type, options.vocab_size);
}

std::string expect_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no can::Error was thrown";
  return "";
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = new fs::path(fs::temp_directory_path() / fmt::format("can_tokenizer_test_{}", getpid()));
    fs::create_directories(*directory_);
    corpus_ = new fs::path(*directory_ / "corpus.txt");
    write_lines(*corpus_, corpus_sentences());
    Tokenizer::train(train_options(*corpus_, *directory_ / "bpe", "bpe"));
    Tokenizer::train(train_options(*corpus_, *directory_ / "unigram", "unigram"));
  }
  static void TearDownTestSuite() {
    can::remove_tree(*directory_);
    delete corpus_;
    delete directory_;
  }
  static fs::path model_path(const std::string& type) { return *directory_ / (type + ".model"); }

  static fs::path* directory_;
  static fs::path* corpus_;
};
fs::path* TokenizerTest::directory_ = nullptr;
fs::path* TokenizerTest::corpus_ = nullptr;

TEST_F(TokenizerTest, SpecialIdsFollowLlamaConvention) {
  for (const std::string type : {"bpe", "unigram"}) {
    const Tokenizer tokenizer = Tokenizer::load(model_path(type).string());
    EXPECT_EQ(tokenizer.unk_id(), 0) << type;
    EXPECT_EQ(tokenizer.bos_id(), 1) << type;
    EXPECT_EQ(tokenizer.eos_id(), 2) << type;
    EXPECT_EQ(tokenizer.pad_id(), 3) << type;
    EXPECT_EQ(tokenizer.vocab_size(), type == "bpe" ? kBpeVocab : kUnigramVocab) << type;
  }
}

TEST_F(TokenizerTest, EncodePrependsBosLikeHuggingFaceLlama) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("bpe").string());
  const std::string text = "The river finds a strange signal.";
  const std::vector<int64_t> plain = tokenizer.encode(text, /*add_bos=*/false);
  const std::vector<int64_t> with_bos = tokenizer.encode(text);
  ASSERT_FALSE(plain.empty());
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_EQ(std::vector<int64_t>(with_bos.begin() + 1, with_bos.end()), plain);
  // The ids as a model sees them: a LibTorch tensor in this same process.
  const torch::Tensor ids = torch::tensor(with_bos, torch::kLong);
  EXPECT_EQ(ids.size(0), static_cast<int64_t>(with_bos.size()));
  EXPECT_EQ(ids[0].item<int64_t>(), 1);
  EXPECT_EQ(ids.sum().item<int64_t>(), std::accumulate(with_bos.begin(), with_bos.end(), int64_t{0}));
}

TEST_F(TokenizerTest, DecodeInvertsEncode) {
  const std::vector<std::string> texts = {"The café owner sells fresh bread at the crêperie.",
                                          "Zebras negotiate 98765 contracts in Zürich!", "在北京的咖啡馆 😀 naïve?",
                                          "Ωμέγα means the end"};
  for (const std::string type : {"bpe", "unigram"}) {
    const Tokenizer tokenizer = Tokenizer::load(model_path(type).string());
    for (const auto& text : texts) EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text) << type;
  }
}

TEST_F(TokenizerTest, UnseenCharactersBecomeBytePiecesNotUnknown) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("bpe").string());
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, absent from the corpus
  const std::vector<int64_t> ids = tokenizer.encode(emoji, /*add_bos=*/false);
  // "▁" (a learned piece) then the four UTF-8 bytes <0xF0> <0x9F> <0x98> <0x80>,
  // which follow the 4 special pieces in byte order: id = 4 + byte.
  const std::vector<int64_t> byte_ids = {4 + 0xF0, 4 + 0x9F, 4 + 0x98, 4 + 0x80};
  ASSERT_GE(ids.size(), byte_ids.size());
  EXPECT_EQ(std::vector<int64_t>(ids.end() - 4, ids.end()), byte_ids);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tokenizer.unk_id()), 0);
  EXPECT_EQ(tokenizer.decode(ids), emoji);
}

TEST_F(TokenizerTest, DecodeDropsBosEosAndPad) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("bpe").string());
  const std::string text = "Our team counts 1,500 coins.";
  std::vector<int64_t> ids = tokenizer.encode(text);
  ids.push_back(tokenizer.eos_id());
  ids.push_back(tokenizer.pad_id());
  ids.push_back(tokenizer.pad_id());
  EXPECT_EQ(tokenizer.decode(ids), text);
  EXPECT_EQ(tokenizer.decode({tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()}), "");
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideVocabulary) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("bpe").string());
  const std::string message = expect_error([&] { tokenizer.decode({1, 50, kBpeVocab}); });
  EXPECT_NE(message.find(fmt::format("token id {} at position 2", kBpeVocab)), std::string::npos) << message;
  EXPECT_NE(expect_error([&] { tokenizer.decode({-1}); }).find("token id -1"), std::string::npos);
}

TEST_F(TokenizerTest, EncodeBatchEqualsEncodeOfEachText) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("unigram").string());
  for (const bool add_bos : {true, false}) {
    const auto batch = tokenizer.encode_batch(kHeldOutLines, add_bos);
    ASSERT_EQ(batch.size(), kHeldOutLines.size());
    for (size_t i = 0; i < kHeldOutLines.size(); ++i) EXPECT_EQ(batch[i], tokenizer.encode(kHeldOutLines[i], add_bos));
  }
}

TEST_F(TokenizerTest, EncodeMatchesSpmEncodeToolOnEveryLine) {
  const fs::path lines_path = *directory_ / "held_out.txt";
  write_lines(lines_path, kHeldOutLines);
  for (const std::string type : {"bpe", "unigram"}) {
    const fs::path ids_path = *directory_ / (type + "_ids.txt");
    run_command(fmt::format("spm_encode --model='{}' --output_format=id < '{}' > '{}'", model_path(type).string(),
                            lines_path.string(), ids_path.string()));
    const auto reference = read_id_lines(ids_path);
    ASSERT_EQ(reference.size(), kHeldOutLines.size()) << type;
    const Tokenizer tokenizer = Tokenizer::load(model_path(type).string());
    for (size_t i = 0; i < kHeldOutLines.size(); ++i) {
      std::vector<int64_t> expected = {tokenizer.bos_id()};  // spm_encode adds no BOS; we do
      expected.insert(expected.end(), reference[i].begin(), reference[i].end());
      EXPECT_EQ(tokenizer.encode(kHeldOutLines[i]), expected) << type << " line " << i + 1;
    }
  }
}

TEST_F(TokenizerTest, TrainingMatchesSpmTrainVocabulary) {
  for (const std::string type : {"bpe", "unigram"}) {
    const TokenizerTrainOptions reference = train_options(*corpus_, *directory_ / ("spm_train_" + type), type);
    run_command(spm_train_command(reference));
    EXPECT_EQ(read_text_file(reference.model_prefix + ".vocab"), read_text_file(*directory_ / (type + ".vocab")))
        << type;
  }
}

TEST_F(TokenizerTest, TrainingIsReproducibleToTheByte) {
  for (const std::string type : {"bpe", "unigram"}) {
    const fs::path again = *directory_ / "again" / type;
    Tokenizer::train(train_options(*corpus_, again, type));
    EXPECT_EQ(read_text_file(again.string() + ".model"), read_text_file(model_path(type))) << type;
  }
}

TEST_F(TokenizerTest, EncodesConcurrentlyFromSeveralThreads) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("bpe").string());
  const auto expected = tokenizer.encode_batch(corpus_sentences());
  std::vector<std::vector<std::vector<int64_t>>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) threads.emplace_back([&] { result = tokenizer.encode_batch(corpus_sentences()); });
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

TEST_F(TokenizerTest, SentencepieceStaysOutOfTheMainLinkNamespace) {
  const Tokenizer tokenizer = Tokenizer::load(model_path("bpe").string());
  ASSERT_GT(tokenizer.vocab_size(), 0);
  EXPECT_EQ(dlopen("libsentencepiece.so.0", RTLD_NOW | RTLD_NOLOAD), nullptr);
  EXPECT_NE(dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD), nullptr);
}

TEST(Tokenizer, LoadingMissingModelNamesThePath) {
  const std::string message = expect_error([] { Tokenizer::load("/nonexistent/dir/tokenizer.model"); });
  EXPECT_NE(message.find("'/nonexistent/dir/tokenizer.model' does not exist"), std::string::npos) << message;
}

TEST(Tokenizer, LoadingInvalidModelNamesThePath) {
  const fs::path path = fs::temp_directory_path() / fmt::format("can_tokenizer_invalid_{}.model", getpid());
  write_text_atomically(path, "this is not a sentencepiece model\n");
  const std::string message = expect_error([&] { Tokenizer::load(path.string()); });
  fs::remove(path);
  EXPECT_NE(message.find("cannot load the sentencepiece model '" + path.string() + "'"), std::string::npos) << message;
}

// The backend is loaded once per process, so this runs in a fresh child process
// ("threadsafe" re-executes the binary) where nothing has loaded it yet.
TEST(TokenizerBackendDeathTest, BackendNamedByEnvironmentMustExist) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("CAN_SPM_BACKEND", "/nonexistent/libcan_spm_backend.so", 1);
        try {
          Tokenizer::load("/proc/self/exe");  // any existing file: the backend is looked for first
        } catch (const Error& error) {
          std::fprintf(stderr, "%s\n", error.what());
          std::exit(3);
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(3),
      "the sentencepiece backend '/nonexistent/libcan_spm_backend.so' named by CAN_SPM_BACKEND does not exist");
}

class TokenizerTrainingErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() / fmt::format("can_tokenizer_errors_{}", getpid());
    fs::create_directories(directory_);
    write_lines(directory_ / "corpus.txt", corpus_sentences());
    options_ = train_options(directory_ / "corpus.txt", directory_ / "model", "bpe");
  }
  void TearDown() override { can::remove_tree(directory_); }

  // Trains with `options_` and expects an error containing `expected`, and no model written.
  void expect_training_error(const std::string& expected) {
    const std::string message = expect_error([&] { Tokenizer::train(options_); });
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(options_.model_prefix + ".model"));
  }

  fs::path directory_;
  TokenizerTrainOptions options_;
};

TEST_F(TokenizerTrainingErrorTest, MissingCorpusNamesThePath) {
  options_.input_file = (directory_ / "missing.txt").string();
  expect_training_error("training corpus '" + options_.input_file + "' does not exist");
}

TEST_F(TokenizerTrainingErrorTest, BlankCorpusIsRefused) {
  write_lines(directory_ / "blank.txt", {"", "   ", ""});
  options_.input_file = (directory_ / "blank.txt").string();
  expect_training_error("has no non-blank line");
}

TEST_F(TokenizerTrainingErrorTest, VocabularyTooSmallForByteFallbackIsRefused) {
  options_.vocab_size = 200;
  expect_training_error("vocab_size 200 is too small");
}

TEST_F(TokenizerTrainingErrorTest, VocabularyLargerThanCorpusAllowsIsAnErrorNotAnAbort) {
  options_.vocab_size = 100000;
  expect_training_error("Vocabulary size too high (100000)");
}

TEST_F(TokenizerTrainingErrorTest, CollidingSpecialIdsAreRefused) {
  options_.pad_id = 1;
  expect_training_error("pad_id 1 is already taken");
}

TEST_F(TokenizerTrainingErrorTest, UnknownModelTypeIsRefused) {
  options_.model_type = "wordpiece";
  expect_training_error("unknown tokenizer model_type 'wordpiece'");
}

}  // namespace
}  // namespace can
