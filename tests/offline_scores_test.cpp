#include "can/atomic_file.h"
#include "can/offline_scores.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "assertions.h"
#include "can/error.h"
#include "can/synthetic_scores.h"

namespace can {
namespace {

using can::testing::contains;
using can::testing::error_message;

namespace fs = std::filesystem;

class OfflineScoresFile : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ =
        fs::temp_directory_path() / fmt::format("can_offline_scores_test_{}_{}", getpid(),
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(directory_);
  }
  void TearDown() override { can::remove_tree(directory_); }

  fs::path write(const std::string& content) {
    const fs::path path = directory_ / "scores.jsonl";
    std::ofstream(path) << content;
    return path;
  }

  // The message of the can::Error that loading `content` throws.
  std::string load_error(const std::string& content) {
    const fs::path path = write(content);
    try {
      OfflineScores::load(path);
    } catch (const Error& error) {
      return error.what();
    }
    ADD_FAILURE() << "loading did not fail:\n" << content;
    return "";
  }

  std::string where(int line) const { return fmt::format("{}:{}:", (directory_ / "scores.jsonl").string(), line); }

  fs::path directory_;
};

TEST_F(OfflineScoresFile, LoadsRaggedPromptsWithOneConstraint) {
  const auto scores =
      OfflineScores::load(write("{\"prompt_id\": \"a\", \"reward\": [1, 2], \"safety\": [-1, -2]}\n"
                                "\n"
                                "{\"prompt_id\": 7, \"reward\": [3.5, 4, 5], \"safety\": [0.5, 0.25, 0], "
                                "\"responses\": [\"x\", \"y\", \"z\"]}\n"));
  EXPECT_EQ(scores.num_prompts(), 2);
  EXPECT_EQ(scores.num_constraints(), 1);
  EXPECT_EQ(scores.prompt_id(0), "a");
  EXPECT_EQ(scores.prompt_id(1), "7");
  EXPECT_EQ(scores.num_responses(0), 2);
  EXPECT_EQ(scores.num_responses(1), 3);
  EXPECT_EQ(scores.offsets(), (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(scores.rewards(), (std::vector<double>{1, 2, 3.5, 4, 5}));
  EXPECT_EQ(scores.safety(), (std::vector<double>{-1, -2, 0.5, 0.25, 0}));
}

TEST_F(OfflineScoresFile, LoadsSeveralConstraintsResponseMajor) {
  const auto scores = OfflineScores::load(
      write("{\"prompt_id\": \"a\", \"reward\": [1, 2, 3], \"safety\": [[10, 20, 30], [-1, -2, -3]]}\n"));
  EXPECT_EQ(scores.num_constraints(), 2);
  // [total_responses, m]: the m scores of one response are adjacent.
  EXPECT_EQ(scores.safety(), (std::vector<double>{10, -1, 20, -2, 30, -3}));
}

TEST_F(OfflineScoresFile, SaveThenLoadReproducesEveryNumberExactly) {
  SyntheticScoresOptions options;
  options.num_prompts = 20;
  options.min_responses = 3;
  options.max_responses = 9;
  options.num_constraints = 2;
  const OfflineScores original = make_synthetic_scores(options);
  const fs::path path = directory_ / "saved.jsonl";
  original.save(path);
  const OfflineScores loaded = OfflineScores::load(path);
  EXPECT_EQ(loaded.offsets(), original.offsets());
  EXPECT_EQ(loaded.rewards(), original.rewards());
  EXPECT_EQ(loaded.safety(), original.safety());
  EXPECT_EQ(loaded.prompt_id(19), "synth-19");
}

TEST_F(OfflineScoresFile, OneConstraintIsSavedInTheFlatForm) {
  const OfflineScores scores({"p"}, {{1.5, 2}}, {{{-1, 0.25}}});
  const fs::path path = directory_ / "flat.jsonl";
  scores.save(path);
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, R"({"prompt_id":"p","reward":[1.5,2.0],"safety":[-1.0,0.25]})");
}

TEST_F(OfflineScoresFile, NanNamesTheLine) {
  const std::string message = load_error(
      "{\"prompt_id\": 1, \"reward\": [1, 2], \"safety\": [1, 2]}\n"
      "{\"prompt_id\": 2, \"reward\": [1, NaN], \"safety\": [1, 2]}\n");
  EXPECT_TRUE(contains(message, where(2)));
  EXPECT_TRUE(contains(message, "invalid JSON"));
}

TEST_F(OfflineScoresFile, OverflowingNumberNamesTheLine) {
  const std::string message = load_error(
      "{\"prompt_id\": 1, \"reward\": [1, 2], \"safety\": [1, 2]}\n"
      "{\"prompt_id\": 2, \"reward\": [1, 2], \"safety\": [1e999, 2]}\n");
  EXPECT_TRUE(contains(message, where(2)));
  EXPECT_TRUE(contains(message, "number overflow"));
}

TEST_F(OfflineScoresFile, RaggedRecordNamesTheLineAndRow) {
  const std::string message = load_error(
      "{\"prompt_id\": 1, \"reward\": [1, 2], \"safety\": [[1, 2], [3, 4]]}\n"
      "{\"prompt_id\": 2, \"reward\": [1, 2], \"safety\": [[1, 2], [3, 4]]}\n"
      "{\"prompt_id\": 3, \"reward\": [1, 2, 3], \"safety\": [[1, 2, 3], [1, 2]]}\n");
  EXPECT_TRUE(contains(message, where(3)));
  EXPECT_TRUE(contains(message, "'safety' row 1 has 2 numbers but 'reward' has 3"));
}

TEST_F(OfflineScoresFile, ChangingConstraintCountNamesTheLine) {
  const std::string message = load_error(
      "{\"prompt_id\": 1, \"reward\": [1, 2], \"safety\": [[1, 2], [3, 4]]}\n"
      "{\"prompt_id\": 2, \"reward\": [1, 2], \"safety\": [1, 2]}\n");
  EXPECT_TRUE(contains(message, where(2)));
  EXPECT_TRUE(contains(message, "1 safety rows (constraints), but the first prompt has 2"));
}

TEST_F(OfflineScoresFile, MissingKeyNamesTheLineAndKey) {
  const std::string message = load_error(
      "{\"prompt_id\": 1, \"reward\": [1, 2], \"safety\": [1, 2]}\n"
      "{\"prompt_id\": 2, \"safety\": [1, 2]}\n");
  EXPECT_TRUE(contains(message, where(2)));
  EXPECT_TRUE(contains(message, "missing field 'reward'"));
  EXPECT_TRUE(contains(load_error("{\"reward\": [1], \"safety\": [1]}\n"), "missing field 'prompt_id'"));
}

TEST_F(OfflineScoresFile, EmptyFileIsAnError) {
  EXPECT_TRUE(contains(load_error(""), "no prompts"));
  EXPECT_TRUE(contains(load_error("\n  \n"), "no prompts"));
}

TEST_F(OfflineScoresFile, WrongTypesNameTheLineAndKey) {
  EXPECT_TRUE(contains(load_error("{\"prompt_id\": 1, \"reward\": \"high\", \"safety\": [1]}\n"),
                       ":1: field 'reward' must be an array of numbers, got string"));
  EXPECT_TRUE(contains(load_error("{\"prompt_id\": 1, \"reward\": [1, \"2\"], \"safety\": [1, 2]}\n"),
                       ":1: field 'reward'[1] must be a number, got string"));
  EXPECT_TRUE(contains(load_error("{\"prompt_id\": 1, \"reward\": [1, true], \"safety\": [1, 2]}\n"),
                       "'reward'[1] must be a number, got boolean"));
  EXPECT_TRUE(contains(load_error("{\"prompt_id\": 1, \"reward\": [1], \"safety\": [[1], 2]}\n"),
                       "field 'safety'[1] must be an array of numbers, got number"));
  EXPECT_TRUE(contains(load_error("{\"prompt_id\": 1.5, \"reward\": [1], \"safety\": [1]}\n"),
                       "'prompt_id' must be a string or an integer, got number"));
  EXPECT_TRUE(contains(load_error("[1, 2, 3]\n"), ":1: expected a JSON object"));
  EXPECT_TRUE(contains(load_error("{\"prompt_id\": 1, \"reward\": [], \"safety\": [[]]}\n"), "'reward' is empty"));
}

TEST_F(OfflineScoresFile, DuplicatePromptIdNamesBothLines) {
  const std::string message = load_error(
      "{\"prompt_id\": \"q\", \"reward\": [1], \"safety\": [1]}\n"
      "{\"prompt_id\": \"r\", \"reward\": [1], \"safety\": [1]}\n"
      "{\"prompt_id\": \"q\", \"reward\": [1], \"safety\": [1]}\n");
  EXPECT_TRUE(contains(message, where(3)));
  EXPECT_TRUE(contains(message, "duplicate prompt_id 'q' (first on line 1)"));
}

TEST(OfflineScores, InMemoryScoresAreValidatedLikeAFile) {
  EXPECT_TRUE(contains(error_message([] {
                         OfflineScores({"a", "b"}, {{1}, {1}}, {{{1}}});
                       }),
                       "2 prompt ids, 2 reward rows and 1 safety entries"));
  EXPECT_TRUE(contains(error_message([] {
                         OfflineScores({"a"}, {{1, 2}}, {{{1}}});
                       }),
                       "prompt 0 (id 'a'): 'safety' row 0 has 1 numbers"));
  EXPECT_TRUE(contains(error_message([] {
                         OfflineScores({"a"}, {{1, NAN}}, {{{1, 2}}});
                       }),
                       "'reward'[1] is not finite"));
  EXPECT_TRUE(contains(error_message([] { OfflineScores({}, {}, {}); }), "no prompts"));
}

}  // namespace
}  // namespace can
