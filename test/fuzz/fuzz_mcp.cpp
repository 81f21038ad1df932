// What an MCP server sends (tools/mcp/protocol): any line or HTTP body is decoded as
// JSON-RPC without crashing, and every decoded result goes through the parsers of the
// handshake, the tool pages and the call results, as the client would use it. The
// --mcp-servers parser takes any text too.

#include "stargazer/tools/mcp/protocol.hpp"

#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

using namespace stargazer::tools::mcp;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto decoded = decode(text);
  if (auto* messages = std::get_if<std::vector<message>>(&decoded)) {
    FUZZ_CHECK(!messages->empty());
    for (const auto& m : *messages) {
      FUZZ_CHECK(m.document != nullptr);
      if (m.type == message::kind::request) FUZZ_CHECK(!m.id_json.empty());
      if (m.type == message::kind::result) {
        const auto* result = m.result();
        FUZZ_CHECK(result != nullptr);
        (void)parse_initialize_result(*result);
        if (auto page = parse_tools_list(*result); auto* p = std::get_if<tool_page>(&page))
          for (const auto& t : p->tools) FUZZ_CHECK(!t.name.empty() && !t.input_schema_json.empty());
        (void)parse_call_result(*result);
      }
      if (m.type == message::kind::request) (void)encode_result(m.id_json, "{}");
    }
  }
  (void)parse_server_configs(text);
  return 0;
}
