// Test support: a small synthetic world and a sentencepiece tokenizer trained
// on its corpus, in a temporary directory.
#pragma once

#include <fstream>

#include "can/llama.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"
#include "temporary_directory.h"
#include "tiny_model.h"

namespace can::testing {

struct TinyWorld {
  TemporaryDirectory directory;
  SyntheticWorld world;
  std::filesystem::path tokenizer_path;  // <directory>/tokenizer.model

  explicit TinyWorld(int64_t train_prompts = 150, int64_t test_prompts = 10, int vocab_size = 400) {
    WorldOptions options;
    options.num_train_prompts = train_prompts;
    options.num_test_prompts = test_prompts;
    world = build_world(options);
    const auto corpus = directory.path() / "corpus.txt";
    std::ofstream out(corpus);
    for (const auto& text : world.corpus) out << text << '\n';
    out.close();
    TokenizerTrainOptions tokenizer_options;
    tokenizer_options.input_file = corpus.string();
    tokenizer_options.model_prefix = (directory.path() / "tokenizer").string();
    tokenizer_options.vocab_size = vocab_size;
    Tokenizer::train(tokenizer_options);
    tokenizer_path = directory.path() / "tokenizer.model";
  }
};

}  // namespace can::testing
