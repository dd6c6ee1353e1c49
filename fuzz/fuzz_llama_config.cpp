// A model folder's config.json read as a LlamaConfig (src/model/llama_config.cpp).
#include <nlohmann/json.hpp>

#include "can/json_fields.h"
#include "can/llama.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("config.json", data, size);
  can::fuzz::expect_clear_error([&] {
    const can::LlamaConfig config = can::LlamaConfig::from_json(can::read_json_file(path), path.string());
    can::fuzz::require(!config.problem().has_value(), "from_json accepted a config that problem() refuses");
    // What was read is written back and read again to the same config.
    const can::LlamaConfig again = can::LlamaConfig::from_json(config.to_json("LlamaForCausalLM"), "round trip");
    can::fuzz::require(again.to_json("LlamaForCausalLM") == config.to_json("LlamaForCausalLM"),
                       "a config read, written and read again changed");
  });
  return 0;
}
