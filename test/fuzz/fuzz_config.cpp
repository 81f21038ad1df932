// Configuration files (core/config.hpp): the bytes are the TOML file given to --config.
// Parsing ends in a configuration or a one-line error, never a crash; a configuration
// that parses renders (render_config) to a file that parses to the same rendering.

#include "roles/options.hpp"

#include "fuzz_check.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <variant>

extern char** environ;

namespace {

std::string config_path;

void write_file(const std::string& text) {
  std::ofstream f(config_path, std::ios::binary | std::ios::trunc);
  f << text;
}

std::variant<stargazer::parsed_command, stargazer::parse_exit> parse(std::string& errors) {
  const char* argv[] = {"stargazer", "--config", config_path.c_str()};
  std::ostringstream out, err;
  auto result = stargazer::parse_command_line(3, argv, out, err);
  errors = err.str();
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // The environment would override the file: drop every SG_* variable.
  for (bool found = true; found;) {
    found = false;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry(*e);
      if (entry.rfind("SG_", 0) == 0) {
        unsetenv(entry.substr(0, entry.find('=')).c_str());
        found = true;
        break;
      }
    }
  }
  const char* dir = std::getenv("TMPDIR");
  config_path = std::string(dir != nullptr ? dir : "/tmp") + "/stargazer-fuzz-config-" + std::to_string(getpid()) + ".toml";
  std::atexit([] { std::remove(config_path.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  write_file(std::string(reinterpret_cast<const char*>(data), size));
  std::string errors;
  auto first = parse(errors);
  if (const auto* exit = std::get_if<stargazer::parse_exit>(&first)) {
    FUZZ_CHECK(exit->status == 2);
    FUZZ_CHECK(!errors.empty());
    return 0;
  }
  const auto rendered = stargazer::render_config(std::get<stargazer::parsed_command>(first).cfg);
  write_file(rendered);
  auto second = parse(errors);
  if (!std::holds_alternative<stargazer::parsed_command>(second))
    std::fprintf(stderr, "rendered configuration:\n%s\nerror: %s\n", rendered.c_str(), errors.c_str());
  FUZZ_CHECK(std::holds_alternative<stargazer::parsed_command>(second));
  FUZZ_CHECK(stargazer::render_config(std::get<stargazer::parsed_command>(second).cfg) == rendered);
  return 0;
}
