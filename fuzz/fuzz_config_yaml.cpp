// The run configuration: YAML through the schema, and one --set override
// (src/pipeline/config.cpp, src/io/yaml_options.cpp). The input's first line is the
// override (KEY=VALUE), the rest the YAML file.
#include <string>

#include "can/config.h"
#include "can/yaml_options.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string assignment = input.substr(0, newline);
  const std::string yaml = newline == std::string::npos ? std::string() : input.substr(newline + 1);
  const auto path = can::fuzz::write_input("config.yaml", reinterpret_cast<const uint8_t*>(yaml.data()), yaml.size());
  can::fuzz::expect_clear_error([&] {
    std::vector<can::OptionOverride> overrides;
    if (!assignment.empty()) overrides.push_back(can::parse_set_option(assignment));
    const can::Config config = can::load_config(path, overrides);
    // A config that loads is written as YAML that loads to the same config.
    const std::string written = can::config_to_yaml(config);
    const auto again_path = can::fuzz::write_input(
        "config.resolved.yaml", reinterpret_cast<const uint8_t*>(written.data()), written.size());
    can::fuzz::require(can::config_to_yaml(can::load_config(again_path)) == written,
                       "a loaded config written as YAML loads differently");
  });
  return 0;
}
