// Model-supplied tool input (tools/): the calculator's evaluator, the JSON-schema
// validator (schema and arguments both from the input, split at the first NUL byte) and
// the --tool-permissions parser take any text without crashing.

#include "stargazer/tools/builtin.hpp"
#include "stargazer/tools/json_schema.hpp"
#include "stargazer/tools/registry.hpp"

#include "fuzz_check.hpp"

#include <rapidjson/document.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

using namespace stargazer::tools;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const auto value = evaluate_expression(text);
  if (const auto* v = std::get_if<double>(&value)) FUZZ_CHECK(std::isfinite(*v));

  (void)parse_permissions(text);

  const auto nul = text.find('\0');
  if (nul != std::string_view::npos) {
    const auto schema_text = text.substr(0, nul), args_text = text.substr(nul + 1);
    rapidjson::Document schema, args;
    schema.Parse<rapidjson::kParseIterativeFlag>(schema_text.data(), schema_text.size());
    args.Parse<rapidjson::kParseIterativeFlag>(args_text.data(), args_text.size());
    if (!schema.HasParseError() && !args.HasParseError()) (void)validate(schema, args);
  }
  return 0;
}
