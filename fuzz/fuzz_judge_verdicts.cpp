// An external judge's verdicts, JSON Lines (src/eval/external_judge.cpp), against
// three fixed requests with ids "a", "7" and "c".
#include "can/external_judge.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("verdicts.jsonl", data, size);
  static const std::vector<can::JudgeRequest> requests = {
      {"a", "p", "r", "s"}, {"7", "p", "r", "s"}, {"c", "p", "r", "s"}};
  can::fuzz::expect_clear_error([&] {
    const can::ExternalJudgement judgement = can::judge_verdicts(requests, path);
    can::fuzz::require(judgement.num_prompts == 3, "accepted verdicts that do not answer every request");
    for (const can::WinRate* rate : {&judgement.helpfulness, &judgement.safety}) {
      can::fuzz::require(rate->wins + rate->ties + rate->losses == 3, "counted outcomes that are not 3");
      can::fuzz::require(0 <= rate->low && rate->low <= rate->win_rate && rate->win_rate <= rate->high &&
                             rate->high <= 1,
                         "a win rate or interval outside [0, 1]");
    }
  });
  return 0;
}
