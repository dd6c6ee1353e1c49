#include "can/atomic_file.h"
#include "can/json_lines.h"
#include "can/preference_data.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "can/chat_template.h"
#include "can/error.h"
#include "compress.h"

namespace {

namespace fs = std::filesystem;

class PreferenceDataFile : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ =
        fs::temp_directory_path() / fmt::format("can_preference_data_{}_{}", getpid(),
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(directory_);
  }
  void TearDown() override { can::remove_tree(directory_); }

  fs::path write_lines(const std::vector<std::string>& lines) {
    const auto path = directory_ / "pairs.jsonl";
    std::ofstream out(path);
    for (const auto& line : lines) out << line << '\n';
    return path;
  }

  // The message of the can::Error that reading `second_line` (after a valid first line) throws.
  std::string error_for_second_line(const std::string& second_line) {
    const auto path = write_lines({valid_line(), second_line});
    try {
      can::read_preference_pairs(path);
    } catch (const can::Error& error) {
      return error.what();
    }
    ADD_FAILURE() << "no error for line: " << second_line;
    return "";
  }

  static nlohmann::json valid_json() {
    return {{"prompt", "How do I bake bread?"},
            {"response_0", "Mix flour, water, salt and yeast."},
            {"response_1", "I cannot help with that."},
            {"better_response_id", 0},
            {"safer_response_id", 1},
            {"is_response_0_safe", true},
            {"is_response_1_safe", true}};
  }
  static std::string valid_line() { return valid_json().dump(); }
  static std::string line_with(const std::string& field, const nlohmann::json& value) {
    auto json = valid_json();
    json[field] = value;
    return json.dump();
  }
  static std::string line_without(const std::string& field) {
    auto json = valid_json();
    json.erase(field);
    return json.dump();
  }

  fs::path directory_;
};

TEST_F(PreferenceDataFile, ReadsPkuSafeRlhfFieldsAndIgnoresExtraKeys) {
  auto json = valid_json();
  json["prompt_source"] = "Alpaca-7B";  // PKU-SafeRLHF carries more keys than CAN reads
  json["response_0_severity_level"] = 2;
  const auto path = write_lines({json.dump(), "", line_with("better_response_id", 1)});
  const auto pairs = can::read_preference_pairs(path);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].prompt, "How do I bake bread?");
  EXPECT_EQ(pairs[0].response_0, "Mix flour, water, salt and yeast.");
  EXPECT_EQ(pairs[0].response_1, "I cannot help with that.");
  EXPECT_EQ(pairs[0].better_response_id, 0);
  EXPECT_EQ(pairs[0].safer_response_id, 1);
  EXPECT_TRUE(pairs[0].is_response_0_safe);
  EXPECT_TRUE(pairs[0].is_response_1_safe);
  EXPECT_EQ(pairs[1].better_response_id, 1);
  EXPECT_EQ(pairs[0].response(1), "I cannot help with that.");
  EXPECT_THROW(pairs[0].response(2), can::Error);
}

TEST_F(PreferenceDataFile, WriteThenReadGivesTheSamePairs) {
  can::PreferencePair pair;
  pair.prompt = "Tell me a \"secret\"\nplease";
  pair.response_0 = "No.";
  pair.response_1 = "Here is one: \u00e9t\u00e9.";
  pair.better_response_id = 1;
  pair.safer_response_id = 0;
  pair.is_response_0_safe = true;
  pair.is_response_1_safe = false;
  const auto path = directory_ / "relabelled" / "pairs.jsonl";
  can::write_preference_pairs(path, {pair, pair});
  const auto read = can::read_preference_pairs(path);
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(read[1].prompt, pair.prompt);
  EXPECT_EQ(read[1].response_1, pair.response_1);
  EXPECT_EQ(read[1].better_response_id, 1);
  EXPECT_EQ(read[1].safer_response_id, 0);
  EXPECT_TRUE(read[1].is_response_0_safe);
  EXPECT_FALSE(read[1].is_response_1_safe);
  EXPECT_FALSE(read[1].is_response_safe(1));
  EXPECT_EQ(read[1].better_probability, 1.0);
  // Nothing but the target is left behind by the atomic write.
  EXPECT_EQ(std::distance(fs::directory_iterator(path.parent_path()), fs::directory_iterator()), 1);
}

// A pair with a second constraint (another kind of harm): safety_labels holds both.
nlohmann::json two_constraint_json() {
  nlohmann::json json = {{"prompt", "Where does my neighbour's son go to school?"},
                         {"response_0", "Step 1: check the school gate at pickup."},
                         {"response_1", "I can't help with that."},
                         {"better_response_id", 0},
                         {"safer_response_id", 0},
                         {"is_response_0_safe", true},
                         {"is_response_1_safe", true}};
  json["safety_labels"] = {{{"safer_response_id", 0}, {"is_response_0_safe", true}, {"is_response_1_safe", true}},
                           {{"safer_response_id", 1}, {"is_response_0_safe", false}, {"is_response_1_safe", true}}};
  return json;
}

TEST_F(PreferenceDataFile, SafetyLabelsGiveEachConstraintItsOwnLabels) {
  const auto path = write_lines({two_constraint_json().dump()});
  const auto pairs = can::read_preference_pairs(path);
  ASSERT_EQ(pairs.size(), 1u);
  ASSERT_EQ(pairs[0].num_constraints(), 2);
  const can::PreferencePair first = pairs[0].for_constraint(0), second = pairs[0].for_constraint(1);
  EXPECT_EQ(first.safer_response_id, 0);
  EXPECT_TRUE(first.is_response_0_safe);
  EXPECT_EQ(second.safer_response_id, 1);
  EXPECT_FALSE(second.is_response_0_safe);
  EXPECT_TRUE(second.is_response_1_safe);
  EXPECT_EQ(second.num_constraints(), 1);
  EXPECT_EQ(second.better_response_id, 0);
  EXPECT_THROW(pairs[0].for_constraint(2), can::Error);
  // Written back, the line is the one read.
  can::write_preference_pairs(directory_ / "again.jsonl", pairs);
  can::for_each_json_line(directory_ / "again.jsonl", [](const nlohmann::json& line, int64_t) {
    EXPECT_EQ(line, two_constraint_json());
  });
  // A one-constraint pair is written in the plain schema, without safety_labels.
  can::write_preference_pairs(directory_ / "plain.jsonl", {first});
  can::for_each_json_line(directory_ / "plain.jsonl", [](const nlohmann::json& line, int64_t) {
    EXPECT_FALSE(line.contains("safety_labels"));
  });
}

TEST_F(PreferenceDataFile, SafetyLabelsErrorsNameTheLineAndTheEntry) {
  auto contradicting = two_constraint_json();
  contradicting["safety_labels"][0]["safer_response_id"] = 1;
  auto message = error_for_second_line(contradicting.dump());
  EXPECT_NE(message.find("pairs.jsonl:2: safety_labels[0]"), std::string::npos) << message;
  auto bad_id = two_constraint_json();
  bad_id["safety_labels"][1]["safer_response_id"] = 2;
  const auto path = write_lines({two_constraint_json().dump(), bad_id.dump()});
  try {
    can::read_preference_pairs(path);
    ADD_FAILURE() << "no error for safer_response_id 2";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find("pairs.jsonl:2: safety_labels[1]: field 'safer_response_id'"),
              std::string::npos)
        << error.what();
  }
  // The first line has one constraint, the second two.
  message = error_for_second_line(two_constraint_json().dump());
  EXPECT_NE(message.find("pairs.jsonl:2: the pair has safety labels for 2 constraints, the file's first pair for 1"),
            std::string::npos)
      << message;
  message = error_for_second_line(line_with("safety_labels", nlohmann::json::array()));
  EXPECT_NE(message.find("'safety_labels' must be a non-empty array"), std::string::npos) << message;
}

// PKU-SafeRLHF ships train.jsonl.xz: compressed files read as the plain one does, and a
// damaged one is an error naming the file.
TEST_F(PreferenceDataFile, XzAndGzipFilesReadAsThePlainOne) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += line_with("better_response_id", i % 2) + "\n";
  const auto plain = write_lines({text});
  can::testing::write_xz(directory_ / "pairs.jsonl.xz", text);
  can::testing::write_gzip(directory_ / "pairs.jsonl.gz", text);
  const auto expected = can::read_preference_pairs(plain);
  ASSERT_EQ(expected.size(), 300u);
  for (const char* name : {"pairs.jsonl.xz", "pairs.jsonl.gz"}) {
    const auto read = can::read_preference_pairs(directory_ / name);
    ASSERT_EQ(read.size(), expected.size()) << name;
    for (size_t i = 0; i < read.size(); ++i) {
      EXPECT_EQ(can::preference_pair_to_json(read[i]), can::preference_pair_to_json(expected[i])) << name << " " << i;
    }
  }
  // Cut short, corrupted, or not compressed at all: each is named.
  auto error_reading = [&](const std::string& name, const std::string& bytes) {
    can::write_text_atomically(directory_ / name, bytes);
    try {
      can::read_preference_pairs(directory_ / name);
    } catch (const can::Error& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  const std::string xz = can::read_text_file(directory_ / "pairs.jsonl.xz");
  const std::string gz = can::read_text_file(directory_ / "pairs.jsonl.gz");
  std::string message = error_reading("cut.jsonl.xz", xz.substr(0, xz.size() / 2));
  EXPECT_NE(message.find("cut.jsonl.xz': the xz data ends early"), std::string::npos) << message;
  std::string flipped = xz;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x55);
  message = error_reading("flipped.jsonl.xz", flipped);
  EXPECT_NE(message.find("flipped.jsonl.xz'"), std::string::npos) << message;
  message = error_reading("plain.jsonl.xz", text);
  EXPECT_NE(message.find("plain.jsonl.xz': not an xz file"), std::string::npos) << message;
  message = error_reading("plain.jsonl.gz", text);
  EXPECT_NE(message.find("plain.jsonl.gz': not a gzip file"), std::string::npos) << message;
  message = error_reading("cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  EXPECT_NE(message.find("cut.jsonl.gz'"), std::string::npos) << message;
  EXPECT_EQ(message.find("no error"), std::string::npos) << message;
}

TEST_F(PreferenceDataFile, MissingFieldErrorNamesFileLineAndField) {
  const auto message = error_for_second_line(line_without("safer_response_id"));
  EXPECT_NE(message.find("pairs.jsonl:2"), std::string::npos) << message;
  EXPECT_NE(message.find("missing field 'safer_response_id'"), std::string::npos) << message;
}

TEST_F(PreferenceDataFile, WrongTypeErrorNamesFileLineAndField) {
  auto message = error_for_second_line(line_with("response_0", 42));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'response_0' must be a string"), std::string::npos) << message;
  message = error_for_second_line(line_with("better_response_id", "1"));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'better_response_id' must be an integer"), std::string::npos)
      << message;
  message = error_for_second_line(line_with("better_response_id", 1.0));
  EXPECT_NE(message.find("field 'better_response_id'"), std::string::npos) << message;
  message = error_for_second_line(line_with("is_response_1_safe", 1));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'is_response_1_safe' must be true or false"), std::string::npos)
      << message;
}

TEST_F(PreferenceDataFile, ASoftLabelsProbabilityIsWrittenReadAndChecked) {
  can::PreferencePair pair = can::read_preference_pairs(write_lines({valid_json().dump()})).front();
  EXPECT_EQ(pair.better_probability, 1.0);  // absent: a certain label
  EXPECT_FALSE(can::preference_pair_to_json(pair).contains("better_response_probability"));
  pair.better_probability = 0.7310585786300049;
  const auto path = directory_ / "soft" / "pairs.jsonl";
  can::write_preference_pairs(path, {pair});
  EXPECT_EQ(can::read_preference_pairs(path).front().better_probability, 0.7310585786300049);
  for (const double bad : {0.3, 1.5}) {
    const auto message = error_for_second_line(line_with("better_response_probability", bad));
    EXPECT_NE(message.find("pairs.jsonl:2: better_response_probability must lie in [0.5, 1]"), std::string::npos)
        << message;
  }
  const auto message = error_for_second_line(line_with("better_response_probability", "high"));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'better_response_probability'"), std::string::npos) << message;
}

TEST_F(PreferenceDataFile, ResponseIdOtherThanZeroOrOneIsAnError) {
  auto message = error_for_second_line(line_with("safer_response_id", 2));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'safer_response_id' must be 0 or 1, got 2"), std::string::npos)
      << message;
  message = error_for_second_line(line_with("better_response_id", -1));
  EXPECT_NE(message.find("field 'better_response_id' must be 0 or 1, got -1"), std::string::npos) << message;
}

TEST_F(PreferenceDataFile, EmptyOrBlankTextIsAnError) {
  auto message = error_for_second_line(line_with("prompt", ""));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'prompt' is empty"), std::string::npos) << message;
  message = error_for_second_line(line_with("response_1", " \n\t"));
  EXPECT_NE(message.find("pairs.jsonl:2: field 'response_1' is empty"), std::string::npos) << message;
}

TEST_F(PreferenceDataFile, NonObjectLineAndEmptyFileAreErrors) {
  const auto message = error_for_second_line("[1, 2]");
  EXPECT_NE(message.find("pairs.jsonl:2: expected a JSON object"), std::string::npos) << message;
  const auto empty = write_lines({"", "  "});
  EXPECT_THROW(can::read_preference_pairs(empty), can::Error);
}

TEST_F(PreferenceDataFile, ALineLongerThanTheLimitIsRefusedNamingIt) {
  // A pair whose response fills the limit exactly still loads; one byte more is refused
  // before the rest of the line is read (a file with no newline could be gigabytes).
  const std::string fixed = line_with("response_1", "");
  const std::string longest = line_with("response_1", std::string(can::kMaxJsonLineBytes - fixed.size(), 'a'));
  ASSERT_EQ(longest.size(), can::kMaxJsonLineBytes);
  EXPECT_EQ(can::read_preference_pairs(write_lines({valid_line(), longest})).size(), 2u);
  const auto message = error_for_second_line(longest + "a");
  EXPECT_NE(message.find("pairs.jsonl:2: the line is longer than 64 MiB"), std::string::npos) << message.substr(0, 300);
}

TEST_F(PreferenceDataFile, PreferredResponseFollowsTheChosenLabel) {
  can::PreferencePair pair;
  pair.better_response_id = 1;
  pair.safer_response_id = 0;
  EXPECT_EQ(can::preferred_response_id(pair, can::PreferenceLabel::kBetter), 1);
  EXPECT_EQ(can::preferred_response_id(pair, can::PreferenceLabel::kSafer), 0);
}

TEST_F(PreferenceDataFile, ReadsSftExamplesAndNamesTheLineOfABadOne) {
  const auto good = R"({"prompt": "How do I bake bread?", "response": "Mix flour and water.", "kind": "x"})";
  auto path = write_lines({good, "", R"({"prompt": "Hi", "response": "Hello."})"});
  const auto examples = can::read_prompt_responses(path);
  ASSERT_EQ(examples.size(), 2u);
  EXPECT_EQ(examples[0].prompt, "How do I bake bread?");
  EXPECT_EQ(examples[1].response, "Hello.");

  const auto error_for = [&](const std::vector<std::string>& lines) {
    try {
      can::read_prompt_responses(write_lines(lines));
    } catch (const can::Error& error) {
      return std::string(error.what());
    }
    ADD_FAILURE() << "no error";
    return std::string();
  };
  auto message = error_for({good, R"({"prompt": "Hi"})"});
  EXPECT_NE(message.find("pairs.jsonl:2: missing field 'response'"), std::string::npos) << message;
  message = error_for({good, good, R"({"prompt": "Hi", "response": 3})"});
  EXPECT_NE(message.find("pairs.jsonl:3: field 'response' must be a string"), std::string::npos) << message;
  message = error_for({R"({"prompt": " ", "response": "x"})"});
  EXPECT_NE(message.find("pairs.jsonl:1: field 'prompt' is empty"), std::string::npos) << message;
  message = error_for({good, "[1]"});
  EXPECT_NE(message.find("pairs.jsonl:2: expected a JSON object"), std::string::npos) << message;
  message = error_for({good, "{not json"});
  EXPECT_NE(message.find("pairs.jsonl:2: invalid JSON"), std::string::npos) << message;
  EXPECT_THROW(can::read_prompt_responses(write_lines({""})), can::Error);
}

TEST(ChatTemplate, DefaultIsSafeRlhfsTemplate) {
  const can::ChatTemplate chat_template;
  EXPECT_EQ(chat_template.format("How do I bake bread?"),
            "BEGINNING OF CONVERSATION: USER: How do I bake bread? ASSISTANT:");
}

TEST(ChatTemplate, CustomPatternSubstitutesThePromptVerbatim) {
  const can::ChatTemplate chat_template("### Question\n{prompt}\n### Answer\n");
  EXPECT_EQ(chat_template.format("Why {prompt}?"), "### Question\nWhy {prompt}?\n### Answer\n");
}

TEST(ChatTemplate, RejectsPatternsWithoutExactlyOnePlaceholderOrWithATrailingSpace) {
  EXPECT_THROW(can::ChatTemplate("USER: ASSISTANT:"), can::Error);
  EXPECT_THROW(can::ChatTemplate("{prompt} and {prompt}"), can::Error);
  EXPECT_THROW(can::ChatTemplate("USER: {prompt} ASSISTANT: "), can::Error);
}

}  // namespace
