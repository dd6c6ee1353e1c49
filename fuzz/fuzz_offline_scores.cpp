// Offline scores, JSON Lines (src/dual/offline_scores.cpp).
#include <cmath>

#include "can/offline_scores.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("scores.jsonl", data, size);
  can::fuzz::expect_clear_error([&] {
    const can::OfflineScores scores = can::OfflineScores::load(path);
    can::fuzz::require(scores.num_prompts() > 0 && scores.num_constraints() > 0, "accepted scores without data");
    for (int64_t prompt = 0; prompt < scores.num_prompts(); ++prompt) {
      can::fuzz::require(scores.num_responses(prompt) > 0, "accepted a prompt without responses");
    }
    for (const double reward : scores.rewards()) can::fuzz::require(std::isfinite(reward), "accepted a non-finite reward");
  });
  return 0;
}
