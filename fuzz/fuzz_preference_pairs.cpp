// Preference pairs (PKU-SafeRLHF schema) and SFT examples, JSON Lines (src/data/preference_data.cpp).
#include "can/preference_data.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("pairs.jsonl", data, size);
  can::fuzz::expect_clear_error([&] {
    for (const can::PreferencePair& pair : can::read_preference_pairs(path)) {
      can::fuzz::require(pair.better_response_id == 0 || pair.better_response_id == 1, "accepted a better id not 0/1");
      can::fuzz::require(pair.safer_response_id == 0 || pair.safer_response_id == 1, "accepted a safer id not 0/1");
      can::fuzz::require(!pair.prompt.empty() && !pair.response_0.empty() && !pair.response_1.empty(),
                         "accepted an empty text");
      can::fuzz::require(pair.better_probability >= 0.5 && pair.better_probability <= 1,
                         "accepted a better_response_probability outside [0.5, 1]");
      for (int j = 0; j < pair.num_constraints(); ++j) {
        const int safer = pair.for_constraint(j).safer_response_id;
        can::fuzz::require(safer == 0 || safer == 1, "accepted a constraint's safer id not 0/1");
      }
    }
  });
  can::fuzz::expect_clear_error([&] {
    for (const can::PromptResponse& example : can::read_prompt_responses(path)) {
      can::fuzz::require(!example.prompt.empty() && !example.response.empty(), "accepted an empty text");
    }
  });
  return 0;
}
