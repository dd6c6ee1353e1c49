// can-train's configuration: paper defaults, overrides, strict validation whose
// errors name the file, line and key, the documented YAML round trip, and the
// shipped configs in configs/ (loadable and documented exactly as the schema writes).
#include "can/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/error.h"
#include "can/pipeline.h"
#include "temporary_directory.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

namespace fs = std::filesystem;

class ConfigFiles : public ::testing::Test {
 protected:
  fs::path write(const std::string& name, const std::string& text) {
    const fs::path path = directory_.path() / name;
    can::write_text_atomically(path, text);
    return path;
  }
  // The error of loading `text` as <tmp>/bad.yaml.
  std::string load_error(const std::string& text, const std::vector<can::OptionOverride>& overrides = {}) {
    const fs::path path = write("bad.yaml", text);
    return error_message([&] { can::load_config(path, overrides); });
  }
  std::string bad_path() const { return (directory_.path() / "bad.yaml").string(); }

  can::testing::TemporaryDirectory directory_;
};

// The shipped-config rule: the file is a preamble of comments and blank lines
// followed by exactly what config_to_yaml writes for the values it holds.
bool documented_as_the_schema_writes(const std::string& text, const can::Config& config) {
  const std::string generated = can::config_to_yaml(config);
  if (text.size() < generated.size() || text.compare(text.size() - generated.size(), generated.size(), generated)) {
    return false;
  }
  const std::string preamble = text.substr(0, text.size() - generated.size());
  size_t start = 0;
  while (start < preamble.size()) {
    const size_t end = preamble.find('\n', start);
    const std::string line = preamble.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!line.empty() && line[0] != '#') return false;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return true;
}

// The first line where `text` and the schema's rendering of `config` part, for a useful failure message.
std::string first_difference(const std::string& text, const can::Config& config) {
  const std::string generated = can::config_to_yaml(config);
  const size_t body = text.find(generated.substr(0, generated.find('\n')));
  if (body == std::string::npos) return "the file lacks the schema's header line";
  size_t i = 0;
  while (body + i < text.size() && i < generated.size() && text[body + i] == generated[i]) ++i;
  const size_t line_start = generated.rfind('\n', i == 0 ? 0 : i - 1);
  const size_t from = line_start == std::string::npos ? 0 : line_start + 1;
  return "expected the line: " + generated.substr(from, generated.find('\n', from) - from);
}

TEST(Config, SchemaIsConsistent) {
  // Every key and section declared once and inside its section, every default
  // allowed, every key bound to a field of its own.
  can::check_config_schema();
}

// The prediction assumes plain DPO on samples from π_ref itself; whatever departs from
// that is named (issue: honest predictions, item 3).
TEST(Config, SettingsThatVoidThePredictionAreNamed) {
  can::Config config = can::default_config();
  config.sampling.generation.top_p = 1.0;
  config.eval.options.sampling.top_p = 1.0;
  EXPECT_TRUE(can::prediction_caveats(config).empty());
  config.sampling.generation.top_p = 0.9;
  config.sampling.generation.top_k = 50;
  config.dpo.loss.kind = can::PreferenceLossKind::kIpo;
  config.dpo.loss.label_smoothing = 0.1;
  config.eval.options.sampling.temperature = 0.7;
  const std::vector<std::string> caveats = can::prediction_caveats(config);
  ASSERT_EQ(caveats.size(), 4u);
  EXPECT_TRUE(contains(caveats[0], "dpo.loss.kind is ipo")) << caveats[0];
  EXPECT_TRUE(contains(caveats[1], "dpo.loss.label_smoothing is 0.1")) << caveats[1];
  EXPECT_TRUE(contains(caveats[2], "temperature 1, top_p 0.9, top_k 50")) << caveats[2];
  EXPECT_TRUE(contains(caveats[3], "the evaluation samples both policies with temperature 0.7, top_p 1")) << caveats[3];
}

TEST_F(ConfigFiles, SameTemplatePromptsNeedTheWorld) {
  const std::string message = load_error("world:\n  enabled: false\neval:\n  same_template_prompts: true\n");
  EXPECT_TRUE(contains(message, "eval.same_template_prompts")) << message;
  EXPECT_TRUE(contains(message, "needs the synthetic world")) << message;
}

TEST(Config, DefaultsFollowThePaper) {
  const can::Config config = can::default_config();
  EXPECT_EQ(config.pipeline, "mocan");
  EXPECT_TRUE(config.world.enabled);
  EXPECT_DOUBLE_EQ(config.dpo.loss.beta, 0.1);
  EXPECT_EQ(config.dpo.training.epochs, 3);
  EXPECT_DOUBLE_EQ(config.dpo.training.learning_rate, 5e-4);
  EXPECT_EQ(config.dpo.training.decay, can::LearningRateDecay::kCosine);
  EXPECT_EQ(config.dpo.training.warmup_steps, 100);
  EXPECT_EQ(config.dpo.training.max_length, 512);
  EXPECT_EQ(config.dpo.loss.kind, can::PreferenceLossKind::kSigmoid);
  EXPECT_DOUBLE_EQ(config.pecan.safety_dpo.loss.beta, 0.1);
  EXPECT_EQ(config.lora.rank, 8);
  EXPECT_DOUBLE_EQ(config.lora.alpha, 16.0);
  EXPECT_EQ(config.sampling.num_prompts, 1000);
  EXPECT_EQ(config.sampling.responses_per_prompt, 128);
  EXPECT_DOUBLE_EQ(config.sampling.generation.temperature, 1.0);
  EXPECT_DOUBLE_EQ(config.sampling.generation.top_p, 0.9);
  EXPECT_EQ(config.sampling.generation.max_new_tokens, 512);
  EXPECT_DOUBLE_EQ(config.dual.beta, 0.1);
  EXPECT_EQ(config.dual.solver, can::DualSolver::kProjectedNewton);
  EXPECT_EQ(config.relabel.mode, can::RelabelMode::kBernoulli);
  EXPECT_EQ(config.run.device, "auto");
  EXPECT_TRUE(config.sweep.margins.empty());
  EXPECT_TRUE(config.models.policy.empty());
}

TEST_F(ConfigFiles, EmptyFileGivesTheDefaults) {
  const can::Config config = can::load_config(write("empty.yaml", "# nothing set\n"));
  EXPECT_TRUE(can::artifact_config_differences(can::default_config(), config).empty());
  EXPECT_EQ(config.run.dir, can::default_config().run.dir);
}

TEST_F(ConfigFiles, MissingKeysTakeDefaults) {
  const can::Config config = can::load_config(write("partial.yaml", "sampling:\n  num_prompts: 7\n"));
  EXPECT_EQ(config.sampling.num_prompts, 7);
  const auto differences = can::artifact_config_differences(can::default_config(), config);
  ASSERT_EQ(differences.size(), 1u);
  EXPECT_EQ(differences[0].key, "sampling.num_prompts");
  EXPECT_EQ(differences[0].before, "1000");
  EXPECT_EQ(differences[0].after, "7");
}

TEST_F(ConfigFiles, OverridesApplyInOrderOverTheFileAndReachTheirGroup) {
  const fs::path path = write("base.yaml", "sampling:\n  top_p: 0.8\nmodels:\n  policy: models/alpaca\n");
  const can::Config config = can::load_config(
      path, {can::parse_set_option("pecan.safety_dpo.learning_rate=1e-3"), can::parse_set_option("sampling.top_p=0.5"),
             can::parse_set_option("sampling.top_p=0.7"), can::parse_set_option("lora.target_modules=[q_proj, k_proj]"),
             can::parse_set_option("models.policy="), can::parse_set_option("run.device=cuda:1"),
             can::parse_set_option("world.enabled=true"), can::parse_set_option("dual.margins=[0.5]")});
  EXPECT_DOUBLE_EQ(config.pecan.safety_dpo.training.learning_rate, 1e-3);
  EXPECT_DOUBLE_EQ(config.pecan.helpfulness_dpo.training.learning_rate, 5e-4);
  EXPECT_DOUBLE_EQ(config.dpo.training.learning_rate, 5e-4);
  EXPECT_DOUBLE_EQ(config.sampling.generation.top_p, 0.7);
  EXPECT_EQ(config.lora.target_modules, (std::vector<std::string>{"q_proj", "k_proj"}));
  EXPECT_EQ(config.models.policy, "");
  EXPECT_EQ(config.run.device, "cuda:1");
  EXPECT_EQ(config.dual.margins, std::vector<double>{0.5});
}

TEST(Config, SetOptionNeedsAnEqualsSignAndAKey) {
  const can::OptionOverride parsed = can::parse_set_option("data.chat_template=USER: {prompt} = ok");
  EXPECT_EQ(parsed.key, "data.chat_template");
  EXPECT_EQ(parsed.value, "USER: {prompt} = ok");
  EXPECT_EQ(parsed.origin, "--set data.chat_template=USER: {prompt} = ok");
  EXPECT_TRUE(
      contains(error_message([] { can::parse_set_option("dpo.beta"); }), "--set dpo.beta: expected key.path=value"));
  EXPECT_TRUE(contains(error_message([] { can::parse_set_option("=3"); }), "expected key.path=value"));
}

TEST_F(ConfigFiles, UnknownKeyNamesFileLineAndSuggestsTheNearMiss) {
  const std::string message = load_error("run:\n  seed: 3\ndpo:\n  betta: 0.2\n");
  EXPECT_TRUE(contains(message, bad_path() + ":4: dpo.betta: unknown key (did you mean 'dpo.beta'?)"));
  EXPECT_TRUE(contains(message, "'dpo' has: epochs, micro_batch_size"));
  const std::string section = load_error("samplng:\n  top_p: 0.5\n");
  EXPECT_TRUE(contains(section, bad_path() + ":1: samplng: unknown key (did you mean 'sampling'?)"));
}

TEST_F(ConfigFiles, KeyInTheWrongSectionSuggestsTheSameNameElsewhere) {
  const std::string message = load_error("sampling:\n  beta: 0.1\n");
  EXPECT_TRUE(contains(message, ":2: sampling.beta: unknown key (did you mean 'dpo.beta'"));
  EXPECT_TRUE(contains(message, "'dual.beta'"));
}

TEST_F(ConfigFiles, UnknownOverrideKeyNamesTheSetArgument) {
  const std::string message = load_error("", {can::parse_set_option("dpo.lerning_rate=1")});
  EXPECT_TRUE(
      contains(message, "--set dpo.lerning_rate=1: dpo.lerning_rate: unknown key (did you mean 'dpo.learning_rate'?)"));
  const std::string section = load_error("", {can::parse_set_option("dpo=3")});
  EXPECT_TRUE(contains(section, "--set dpo=3: dpo: is a section; set one of its keys"));
}

TEST_F(ConfigFiles, WrongTypesNameFileLineAndKey) {
  EXPECT_TRUE(contains(load_error("sft:\n  epochs: 3.5\n"), bad_path() + ":2: sft.epochs: expected an int, got '3.5'"));
  EXPECT_TRUE(contains(load_error("dpo:\n  beta: abc\n"), ":2: dpo.beta: expected a float, got 'abc'"));
  EXPECT_TRUE(contains(load_error("dpo:\n  beta: \"0.1\"\n"), ":2: dpo.beta: expected a float, got the quoted string"));
  EXPECT_TRUE(contains(load_error("dual:\n  beta: .inf\n"), "dual.beta: expected a float"));
  EXPECT_TRUE(contains(load_error("world:\n  enabled: yes\n"), ":2: world.enabled: expected true or false, got 'yes'"));
  EXPECT_TRUE(contains(load_error("run:\n  seed: [1]\n"), ":2: run.seed: expected an int, got a list"));
  EXPECT_TRUE(
      contains(load_error("dual:\n  margins: 0.5\n"), ":2: dual.margins: expected a list like [1.0, 2.0], got '0.5'"));
  const std::string element = load_error("\n\nsweep:\n  margins:\n    - 0.5\n    - high\n");
  EXPECT_TRUE(contains(element, bad_path() + ":6: sweep.margins[1]: expected a float, got 'high'"));
  EXPECT_TRUE(contains(load_error("models:\n  policy:\n"), ":2: models.policy: has no value"));
  EXPECT_TRUE(contains(load_error("dpo: 0.1\n"), ":1: dpo: is a section; expected a mapping of its keys"));
  EXPECT_TRUE(contains(load_error("", {can::parse_set_option("sft.epochs=two")}),
                       "--set sft.epochs=two: sft.epochs: expected an int, got 'two'"));
}

TEST_F(ConfigFiles, OutOfRangeValuesAreErrors) {
  EXPECT_TRUE(contains(load_error("dpo:\n  beta: 0\n"), ":2: dpo.beta: 0 is out of range (allowed: > 0)"));
  EXPECT_TRUE(contains(load_error("world:\n  label_noise: 0.7\n"),
                       ":2: world.label_noise: 0.7 is out of range (allowed: [0, 0.5])"));
  EXPECT_TRUE(contains(load_error("lora:\n  dropout: 1\n"), "lora.dropout: 1 is out of range (allowed: [0, 1))"));
  EXPECT_TRUE(contains(load_error("sampling:\n  responses_per_prompt: 1\n"), "(allowed: >= 2)"));
  EXPECT_TRUE(contains(load_error("run:\n  threads: -1\n"), ":2: run.threads: -1 is out of range"));
  // yaml-cpp said "bad file" for nesting past its depth limit.
  const std::string deep = load_error("run:\n  dir: " + std::string(5000, '[') + std::string(5000, ']') + "\n");
  EXPECT_TRUE(contains(deep, ":2: not valid YAML: nested ")) << deep;
  EXPECT_TRUE(contains(deep, " levels deep, past what the YAML parser takes")) << deep;
  // Below what tokenizer training accepts (byte fallback's 256 pieces and the specials).
  EXPECT_TRUE(contains(load_error("tokenizer:\n  vocab_size: 100\n"),
                       ":2: tokenizer.vocab_size: 100 is out of range (allowed: >= 261)"));
  EXPECT_TRUE(contains(load_error("world:\n  num_train_prompts: 2000000000\n"), "(allowed: [1, 1000000])"));
  EXPECT_TRUE(contains(load_error("run:\n  seed: 99999999999999999999\n"), "run.seed: 99999999999999999999 overflows"));
}

TEST_F(ConfigFiles, BadChoicesListTheAllowedValuesAndSuggestOne) {
  EXPECT_TRUE(contains(load_error("dual:\n  solver: netwon\n"),
                       ":2: dual.solver: 'netwon' is not one of: newton, pgd (did you mean 'newton'?)"));
  EXPECT_TRUE(contains(load_error("run:\n  device: gpu\n"), ":2: run.device: 'gpu' is not a device"));
  EXPECT_TRUE(contains(load_error("run:\n  device: cuda:x\n"), "'cuda:x' is not a device"));
  EXPECT_TRUE(contains(load_error("lora:\n  target_modules: [q_proj, qkv]\n"),
                       ":2: lora.target_modules[1]: 'qkv' is not one of: q_proj, k_proj"));
  EXPECT_TRUE(contains(load_error("", {can::parse_set_option("pecan.safety_dpo.loss=ipo2")}),
                       "'ipo2' is not one of: sigmoid, ipo (did you mean 'ipo'?)"));
}

TEST_F(ConfigFiles, InconsistentKeysAreErrorsNamingWhereTheyWereSet) {
  const std::string external = load_error("world:\n  enabled: false\n");
  EXPECT_TRUE(contains(external, bad_path() + " (default): data.pairs_train: is required when world.enabled is false"));
  const std::string both = load_error("data:\n  pairs_train: pairs.jsonl\n");
  EXPECT_TRUE(contains(both, bad_path() + ":2: data.pairs_train: is set while world.enabled is true"));
  // Prompt files are optional when the pairs' prompts can stand in: the test split's for evaluation.
  const std::string no_test =
      load_error("world:\n  enabled: false\ndata:\n  pairs_train: p.jsonl.xz\n  sft_train: s.jsonl\n");
  EXPECT_TRUE(contains(no_test, "data.prompts_test: is required when world.enabled is false, unless data.pairs_test"))
      << no_test;
  const can::Config published = can::load_config(write(
      "published.yaml", "world:\n  enabled: false\ndata:\n  pairs_train: p.jsonl.xz\n  pairs_test: t.jsonl.xz\n"
                        "  sft_train: s.jsonl\n"));
  EXPECT_EQ(published.data.pairs_test, "t.jsonl.xz");
  EXPECT_TRUE(published.data.prompts_sample.empty());
  EXPECT_TRUE(contains(load_error("dpo:\n  beta: 0.2\n"), "dual.beta: 0.1 differs from dpo.beta 0.2"));
  EXPECT_TRUE(
      contains(load_error("policy:\n  num_attention_heads: 3\n"),
               ":2: policy.num_attention_heads: hidden_size 128 / num_attention_heads 3 must be an even integer"));
  EXPECT_TRUE(contains(load_error("policy:\n  num_key_value_heads: 3\n"),
                       "policy.num_key_value_heads: num_attention_heads 4 is not a multiple of num_key_value_heads 3"));
  // One margin per constraint: the world has one, or two with privacy harm; none is an error.
  EXPECT_EQ(can::load_config(write("two.yaml", "world:\n  privacy_harm: true\ndual:\n  margins: [1.0, 2.0]\n"))
                .dual.margins,
            (std::vector<double>{1.0, 2.0}));
  EXPECT_TRUE(contains(load_error("dual:\n  margins: [1.0, 2.0]\n"),
                       ":2: dual.margins: has 2 values, but the world has 1 safety constraint (illegal harm; "
                       "world.privacy_harm adds privacy): give one margin each"));
  EXPECT_TRUE(contains(load_error("world:\n  privacy_harm: true\n"),
                       "dual.margins: has 1 value, but the world has 2 safety constraints"));
  EXPECT_TRUE(contains(load_error("dual:\n  margins: []\n"), ":2: dual.margins: is empty"));
  // models.cost: one directory, or one per constraint.
  EXPECT_TRUE(contains(load_error("world:\n  privacy_harm: true\nmodels:\n  cost: c0\ndual:\n  margins: [1.0, 2.0]\n"),
                       ":4: models.cost: lists 1 cost models for 2 constraints (dual.margins): give one each"));
  const can::Config two_costs = can::load_config(
      write("costs.yaml", "world:\n  privacy_harm: true\nmodels:\n  cost: [c0, c1]\ndual:\n  margins: [1.0, 2.0]\n"));
  EXPECT_EQ(two_costs.models.cost, (std::vector<std::string>{"c0", "c1"}));
  EXPECT_EQ(can::load_config(write("one.yaml", "models:\n  cost: c0\n")).models.cost, std::vector<std::string>{"c0"});
  EXPECT_TRUE(can::load_config(write("none.yaml", "models:\n  cost: \"\"\n")).models.cost.empty());
  EXPECT_TRUE(contains(load_error("models:\n  policy: p\n  safety_dpo: s0\n"),
                       ":3: models.safety_dpo: is a model of the pecan pipeline; set pipeline: pecan"));
  EXPECT_TRUE(contains(load_error("pipeline: pecan\nmodels:\n  helpfulness_dpo: h\n"),
                       ":3: models.helpfulness_dpo: needs models.policy, the π_ref it was trained from"));
  EXPECT_TRUE(contains(
      load_error("pipeline: pecan\nworld:\n  privacy_harm: true\nmodels:\n  policy: p\n  safety_dpo: s0\ndual:\n"
                 "  margins: [1, 2]\n"),
      ":6: models.safety_dpo: lists 1 safety DPO models for 2 constraints"));
  EXPECT_TRUE(contains(load_error("sweep:\n  constraint: 1\n"),
                       ":2: sweep.constraint: is 1, but there is 1 constraint (dual.margins), numbered from 0"));
  EXPECT_TRUE(contains(load_error("sft:\n  min_lr: 0.1\n"), ":2: sft.min_lr: 0.1 exceeds learning_rate"));
  EXPECT_TRUE(contains(load_error("eval:\n  max_new_tokens: 1024\n"),
                       ":2: eval.max_new_tokens: 1024 leaves no room for a prompt within "
                       "policy.max_position_embeddings 1024"));
  EXPECT_TRUE(contains(load_error("policy:\n  max_position_embeddings: 256\n"),
                       "sft.max_length: 512 exceeds policy.max_position_embeddings 256"));
  EXPECT_TRUE(contains(load_error("data:\n  chat_template: \"USER: {question}\"\n"),
                       ":2: data.chat_template: chat template 'USER: {question}' has no {prompt} placeholder"));
}

TEST_F(ConfigFiles, DuplicateKeysAndBrokenYamlAreErrors) {
  const std::string duplicate = load_error("dpo:\n  beta: 0.1\n  epochs: 2\n  beta: 0.2\n");
  EXPECT_TRUE(contains(duplicate, ":4: dpo.beta: appears twice (first at line 2)"));
  const std::string syntax = load_error("dpo:\n  beta: [0.1\n  epochs: 2\n");
  EXPECT_TRUE(contains(syntax, bad_path() + ":"));
  EXPECT_TRUE(contains(syntax, "not valid YAML"));
  EXPECT_TRUE(contains(load_error("- a\n- b\n"), ":1: expected a mapping of keys at the top level, got a list"));
  EXPECT_TRUE(contains(error_message([&] { can::load_config(directory_.path() / "missing.yaml"); }), "missing.yaml"));
}

TEST(Config, DocumentedYamlGivesTypeDefaultAndAllowedValues) {
  can::Config config = can::default_config();
  config.dpo.loss.kind = can::PreferenceLossKind::kIpo;
  const std::string yaml = can::config_to_yaml(config);
  EXPECT_TRUE(contains(yaml, "\ndpo:\n"));
  EXPECT_TRUE(contains(
      yaml, "  # β: strength of the KL tie to the reference policy (float, default: 0.1, range: > 0)\n  beta: 0.1\n"));
  EXPECT_TRUE(
      contains(yaml, "  # sigmoid: DPO; ipo: IPO (string, default: sigmoid, one of: sigmoid, ipo)\n  loss: ipo\n"));
  EXPECT_TRUE(contains(yaml,
                       "\npecan:\n  # π_r: DPO of π_ref on better_response_id.\n  helpfulness_dpo:\n    # passes over "
                       "the training data (int, default: 3, range: >= 1)\n    epochs: 3\n"));
  // Past 120 columns the details move to a line of their own.
  EXPECT_TRUE(contains(
      yaml,
      "  # linear layers that get adapters, by Hugging Face name\n  # (list of strings, default: [q_proj, v_proj], one "
      "of: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)\n  target_modules: [q_proj, v_proj]\n"));
}

TEST_F(ConfigFiles, ResolvedYamlRoundTripsEveryValue) {
  can::Config config = can::default_config();
  config.run.dir = "runs/with space: and \"quotes\"";
  config.run.device = "cuda:3";
  config.data.chat_template = "A\\B \"{prompt}\"\n\tC: #x";
  config.models.reward = "true";  // a string that would read as a bool if written plain
  config.models.cost = {"0.5", "[1]"};
  config.pipeline = "pecan";
  config.dpo.training.learning_rate = 1.0 / 3.0;
  config.dual.beta = config.dpo.loss.beta = 1e-7;
  config.dual.margins = {-0.25, 0.5};
  config.sweep.margins = {0.1, 2.0, 1e20};
  config.sweep.constraint = 1;
  config.lora.target_modules = {"gate_proj"};
  config.world.enabled = false;
  config.data.pairs_train = "p.jsonl";
  config.data.prompts_sample = "s.jsonl";
  config.data.prompts_test = "t.jsonl";
  config.data.sft_train = "sft.jsonl";
  config.sampling.generation.top_k = 40;
  const std::string yaml = can::config_to_yaml(config);
  const can::Config loaded = can::load_config(write("resolved.yaml", yaml));
  EXPECT_TRUE(can::artifact_config_differences(config, loaded).empty());
  EXPECT_EQ(loaded.run.dir, config.run.dir);
  EXPECT_EQ(loaded.run.device, "cuda:3");
  EXPECT_EQ(loaded.data.chat_template, config.data.chat_template);
  EXPECT_EQ(loaded.models.reward, "true");
  EXPECT_EQ(loaded.dpo.training.learning_rate, 1.0 / 3.0);  // bit for bit
  EXPECT_EQ(can::config_to_yaml(loaded), yaml);
}

TEST(Config, DifferencesSkipKeysThatDoNotChangeArtifacts) {
  const can::Config before = can::default_config();
  can::Config after = before;
  after.run.dir = "elsewhere";
  after.run.threads = 3;
  after.run.device = "cpu";
  after.run.log_level = "debug";
  after.sampling.generation.temperature = 0.7;
  after.pecan.helpfulness_dpo.training.micro_batch_size = 4;
  const auto differences = can::artifact_config_differences(before, after);
  ASSERT_EQ(differences.size(), 2u);
  EXPECT_EQ(differences[0].key, "pecan.helpfulness_dpo.micro_batch_size");
  EXPECT_EQ(differences[1].key, "sampling.temperature");
  EXPECT_EQ(differences[1].before, "1.0");
  EXPECT_EQ(differences[1].after, "0.7");
}

TEST(Config, DocumentationCheckRejectsMissingCommentsAndStaleValues) {
  const can::Config config = can::default_config();
  const std::string documented = "# a preamble\n\n" + can::config_to_yaml(config);
  EXPECT_TRUE(documented_as_the_schema_writes(documented, config));
  std::string without_comment = documented;
  const std::string comment =
      "  # β: strength of the KL tie to the reference policy (float, default: 0.1, range: > 0)\n";
  without_comment.erase(without_comment.find(comment), comment.size());
  EXPECT_FALSE(documented_as_the_schema_writes(without_comment, config));
  EXPECT_FALSE(documented_as_the_schema_writes("not a comment\n" + can::config_to_yaml(config), config));
  can::Config other = config;
  other.eval.num_prompts = 3;
  EXPECT_FALSE(documented_as_the_schema_writes(documented, other));
}

TEST(Config, ShippedConfigsLoadAndAreDocumentedAsTheSchemaWrites) {
  const char* source_dir = std::getenv("CAN_SOURCE_DIR");
  ASSERT_NE(source_dir, nullptr) << "CAN_SOURCE_DIR is set by CTest";
  std::vector<fs::path> configs;
  for (const auto& entry : fs::directory_iterator(fs::path(source_dir) / "configs")) {
    if (entry.path().extension() == ".yaml") configs.push_back(entry.path());
  }
  EXPECT_GE(configs.size(), 3u);
  for (const fs::path& path : configs) {
    SCOPED_TRACE(path.string());
    const can::Config config = can::load_config(path);
    const std::string text = can::read_text_file(path);
    EXPECT_TRUE(documented_as_the_schema_writes(text, config))
        << path.string() << " is not the schema's documented YAML after its preamble; "
        << first_difference(text, config) << "\nregenerate it: can-train --config " << path.string()
        << " --print-config (keep the preamble)";
  }
}

}  // namespace
