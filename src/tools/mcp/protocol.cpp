#include "stargazer/tools/mcp/protocol.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/strings.hpp"

#include <fmt/format.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <array>

namespace stargazer::tools::mcp {

namespace {

// Messages carry tool schemas, which nest more than request bodies do.
constexpr unsigned max_message_depth = 64;

const rapidjson::Value* member(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  const auto it = v.FindMember(name);
  return it == v.MemberEnd() ? nullptr : &it->value;
}

std::string text_of(const rapidjson::Value* v) {
  return v != nullptr && v->IsString() ? std::string(v->GetString(), v->GetStringLength()) : std::string();
}

std::optional<message> decode_one(const rapidjson::Value& v, std::shared_ptr<const rapidjson::Document> doc,
                                  std::string& why) {
  if (!v.IsObject()) {
    why = "a message is not a JSON object";
    return std::nullopt;
  }
  const auto* version = member(v, "jsonrpc");
  if (version == nullptr || !version->IsString() || std::string_view(version->GetString()) != "2.0") {
    why = "no \"jsonrpc\": \"2.0\"";
    return std::nullopt;
  }
  message m;
  m.document = std::move(doc);
  const auto* id = member(v, "id");
  if (id != nullptr && !id->IsString() && !id->IsNumber() && !id->IsNull()) {
    why = "the id is neither a string nor a number";
    return std::nullopt;
  }
  if (id != nullptr) {
    m.id_json = json::to_string(*id);
    if (id->IsInt64()) m.number_id = id->GetInt64();
  }
  if (const auto* method = member(v, "method")) {
    if (!method->IsString()) {
      why = "the method is not a string";
      return std::nullopt;
    }
    m.method.assign(method->GetString(), method->GetStringLength());
    m.type = id != nullptr ? message::kind::request : message::kind::notification;
    if (const auto* p = member(v, "params"); p != nullptr && !p->IsObject() && !p->IsArray()) {
      why = "params are neither an object nor an array";
      return std::nullopt;
    }
    return m;
  }
  if (id == nullptr) {
    why = "neither a method nor an id";
    return std::nullopt;
  }
  if (const auto* error = member(v, "error")) {
    const auto* code = member(*error, "code");
    if (code == nullptr || !code->IsInt()) {
      why = "an error without an integer code";
      return std::nullopt;
    }
    m.type = message::kind::error;
    m.error_code = code->GetInt();
    m.error_message = text_of(member(*error, "message"));
    return m;
  }
  if (member(v, "result") == nullptr) {
    why = "an answer with neither a result nor an error";
    return std::nullopt;
  }
  m.type = message::kind::result;
  return m;
}

std::string human_size(std::size_t bytes) {
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  if (bytes < 1024 * 1024) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024);
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024 * 1024));
}

// The decoded size of base64 text of `length` characters (padding counted out roughly).
std::size_t base64_bytes(const rapidjson::Value* data) {
  if (data == nullptr || !data->IsString()) return 0;
  return static_cast<std::size_t>(data->GetStringLength()) / 4 * 3;
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

}  // namespace

bool supported_protocol_version(std::string_view version) {
  static constexpr std::array<std::string_view, 4> known{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};
  return std::find(known.begin(), known.end(), version) != known.end();
}

const rapidjson::Value* message::params() const {
  return document && document->IsObject() ? member(*document, "params") : nullptr;
}

const rapidjson::Value* message::result() const {
  return document && document->IsObject() ? member(*document, "result") : nullptr;
}

std::variant<std::vector<message>, std::string> decode(std::string_view text) {
  if (json::nesting_depth(text) > max_message_depth)
    return fmt::format("the message nests deeper than {} levels", max_message_depth);
  auto doc = std::make_shared<rapidjson::Document>();
  doc->Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (doc->HasParseError())
    return fmt::format("not JSON at offset {}: {}", doc->GetErrorOffset(), rapidjson::GetParseError_En(doc->GetParseError()));
  std::vector<message> out;
  std::string why;
  if (doc->IsArray()) {
    if (doc->Empty()) return std::string("an empty batch");
    // Each message of a batch shares the document; its params/result are found by id.
    for (const auto& item : doc->GetArray()) {
      auto single = std::make_shared<rapidjson::Document>();
      single->CopyFrom(item, single->GetAllocator());
      auto m = decode_one(*single, single, why);
      if (!m) return why;
      out.push_back(std::move(*m));
    }
    return out;
  }
  auto m = decode_one(*doc, doc, why);
  if (!m) return why;
  out.push_back(std::move(*m));
  return out;
}

std::string encode_request(std::int64_t id, std::string_view method, std::string_view params_json) {
  std::string out = fmt::format(R"({{"jsonrpc":"2.0","id":{},"method":)", id);
  json::append_quoted(out, method);
  if (!params_json.empty()) out.append(",\"params\":").append(params_json);
  out += '}';
  return out;
}

std::string encode_notification(std::string_view method, std::string_view params_json) {
  std::string out = R"({"jsonrpc":"2.0","method":)";
  json::append_quoted(out, method);
  if (!params_json.empty()) out.append(",\"params\":").append(params_json);
  out += '}';
  return out;
}

std::string encode_result(std::string_view id_json, std::string_view result_json) {
  return fmt::format(R"({{"jsonrpc":"2.0","id":{},"result":{}}})", id_json, result_json);
}

std::string encode_error(std::string_view id_json, int code, std::string_view text) {
  return fmt::format(R"({{"jsonrpc":"2.0","id":{},"error":{{"code":{},"message":{}}}}})",
                     id_json.empty() ? "null" : id_json, code, json::quoted(text));
}

std::string initialize_params(std::string_view client_version) {
  return fmt::format(R"({{"protocolVersion":{},"capabilities":{{}},"clientInfo":{{"name":"stargazer","version":{}}}}})",
                     json::quoted(latest_protocol_version), json::quoted(client_version));
}

std::variant<server_info, std::string> parse_initialize_result(const rapidjson::Value& result) {
  if (!result.IsObject()) return std::string("the initialize result is not an object");
  server_info info;
  info.protocol_version = text_of(member(result, "protocolVersion"));
  if (info.protocol_version.empty()) return std::string("the initialize result names no protocolVersion");
  if (!supported_protocol_version(info.protocol_version))
    return fmt::format("the server speaks protocol revision '{}', which this client does not",
                       utf8_prefix(info.protocol_version, 40));
  if (const auto* server = member(result, "serverInfo")) {
    info.name = text_of(member(*server, "name"));
    info.version = text_of(member(*server, "version"));
  }
  if (const auto* caps = member(result, "capabilities"); caps != nullptr && caps->IsObject()) {
    if (const auto* tools = member(*caps, "tools"); tools != nullptr && tools->IsObject()) {
      info.tools = true;
      const auto* changed = member(*tools, "listChanged");
      info.tools_list_changed = changed != nullptr && changed->IsBool() && changed->GetBool();
    }
  }
  info.instructions = text_of(member(result, "instructions"));
  return info;
}

std::string tools_list_params(std::string_view cursor) {
  return cursor.empty() ? std::string("{}") : "{\"cursor\":" + json::quoted(cursor) + "}";
}

std::variant<tool_page, std::string> parse_tools_list(const rapidjson::Value& result) {
  const auto* tools = member(result, "tools");
  if (tools == nullptr || !tools->IsArray()) return std::string("the tools/list result has no 'tools' array");
  tool_page page;
  for (const auto& t : tools->GetArray()) {
    auto name = text_of(member(t, "name"));
    if (name.empty()) {
      page.skipped.push_back("a tool without a name");
      continue;
    }
    const auto* schema = member(t, "inputSchema");
    if (schema == nullptr || !schema->IsObject()) {
      page.skipped.push_back(fmt::format("'{}': no inputSchema object", utf8_prefix(name, 80)));
      continue;
    }
    tool_descriptor d;
    d.name = std::move(name);
    d.title = text_of(member(t, "title"));
    d.description = text_of(member(t, "description"));
    d.input_schema_json = json::to_string(*schema);
    page.tools.push_back(std::move(d));
  }
  page.next_cursor = text_of(member(result, "nextCursor"));
  return page;
}

std::variant<call_outcome, std::string> parse_call_result(const rapidjson::Value& result) {
  if (!result.IsObject()) return std::string("the tools/call result is not an object");
  call_outcome out;
  if (const auto* is_error = member(result, "isError"); is_error != nullptr && is_error->IsBool())
    out.is_error = is_error->GetBool();
  const auto* content = member(result, "content");
  const auto add = [&](std::string_view piece) {
    if (!out.text.empty()) out.text += '\n';
    out.text += piece;
  };
  if (content != nullptr && content->IsArray()) {
    for (const auto& item : content->GetArray()) {
      const auto type = text_of(member(item, "type"));
      if (type == "text") {
        add(text_of(member(item, "text")));
      } else if (type == "image" || type == "audio") {
        add(fmt::format("[{}: {}, {}]", type, text_of(member(item, "mimeType")),
                        human_size(base64_bytes(member(item, "data")))));
      } else if (type == "resource") {
        const auto* resource = member(item, "resource");
        const auto uri = resource != nullptr ? text_of(member(*resource, "uri")) : std::string();
        const auto mime = resource != nullptr ? text_of(member(*resource, "mimeType")) : std::string();
        if (const auto* text = resource != nullptr ? member(*resource, "text") : nullptr; text != nullptr && text->IsString())
          add(fmt::format("[resource {} ({})]\n{}", uri, mime.empty() ? "text" : mime, text_of(text)));
        else
          add(fmt::format("[resource {}: {}, {}]", uri, mime.empty() ? "binary" : mime,
                          human_size(base64_bytes(resource != nullptr ? member(*resource, "blob") : nullptr))));
      } else if (type == "resource_link") {
        std::string line = fmt::format("[link {}: {}", text_of(member(item, "name")), text_of(member(item, "uri")));
        if (const auto mime = text_of(member(item, "mimeType")); !mime.empty()) line += ", " + mime;
        if (const auto* size = member(item, "size"); size != nullptr && size->IsUint64())
          line += ", " + human_size(size->GetUint64());
        add(line + "]");
      } else {
        add(fmt::format("[{} content]", type.empty() ? "untyped" : utf8_prefix(type, 40)));
      }
    }
  } else if (content != nullptr) {
    return std::string("the tools/call result's 'content' is not an array");
  }
  // Structured output only: its JSON is what the model reads.
  if (out.text.empty())
    if (const auto* structured = member(result, "structuredContent"); structured != nullptr)
      out.text = json::to_string(*structured);
  return out;
}

std::string call_params(std::string_view tool_name, std::string_view arguments_json) {
  return fmt::format(R"({{"name":{},"arguments":{}}})", json::quoted(tool_name),
                     arguments_json.empty() ? std::string_view("{}") : arguments_json);
}

std::string cancelled_params(std::int64_t request_id, std::string_view reason) {
  return fmt::format(R"({{"requestId":{},"reason":{}}})", request_id, json::quoted(reason));
}

std::optional<std::string> registry_name(std::string_view server, std::string_view tool) {
  std::string name = fmt::format("{}__{}", server, tool);
  if (name.size() > 64 || !std::all_of(name.begin(), name.end(), name_char)) return std::nullopt;
  return name;
}

namespace {

bool valid_server_name(std::string_view name) {
  return !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), name_char) &&
         name.find("__") == std::string_view::npos && name.back() != '_';
}

std::optional<std::string> string_list(const rapidjson::Value& v, std::vector<std::string>& out) {
  if (!v.IsArray()) return "is not a list of strings";
  for (const auto& item : v.GetArray()) {
    if (!item.IsString()) return "is not a list of strings";
    out.emplace_back(item.GetString(), item.GetStringLength());
  }
  return std::nullopt;
}

bool valid_env_entry(std::string_view entry) {
  const auto name = entry.substr(0, entry.find('='));
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

std::variant<std::vector<server_config>, std::string> parse_server_configs(std::string_view text) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return std::vector<server_config>{};
  auto parsed = json::parse_object(text, 8);
  if (auto* error = std::get_if<std::string>(&parsed)) return "--mcp-servers: " + *error;
  const auto& doc = std::get<rapidjson::Document>(parsed);
  std::vector<server_config> out;
  for (const auto& [key, value] : doc.GetObject()) {
    server_config c;
    c.name.assign(key.GetString(), key.GetStringLength());
    const auto bad = [&](std::string_view what) { return fmt::format("--mcp-servers: server '{}' {}", c.name, what); };
    if (!valid_server_name(c.name))
      return fmt::format("--mcp-servers: '{}' is not a server name (letters, digits, '-' and single '_', at most 32)",
                         utf8_prefix(c.name, 40));
    if (!value.IsObject()) return bad("is not an object");
    for (auto member_it = value.MemberBegin(); member_it != value.MemberEnd(); ++member_it) {
      // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
      const auto& field = member_it->value;
      const std::string_view f(member_it->name.GetString(), member_it->name.GetStringLength());
      const auto need_string = [&](std::string& into) -> std::optional<std::string> {
        if (!field.IsString()) return bad(fmt::format("'{}' is not a string", f));
        into.assign(field.GetString(), field.GetStringLength());
        return std::nullopt;
      };
      std::optional<std::string> problem;
      if (f == "command") problem = need_string(c.command);
      else if (f == "cwd") problem = need_string(c.cwd);
      else if (f == "url") problem = need_string(c.url);
      else if (f == "bearer_token_env") problem = need_string(c.bearer_token_env);
      else if (f == "args" || f == "env") {
        if (auto p = string_list(field, f == "args" ? c.args : c.env)) problem = bad(fmt::format("'{}' {}", f, *p));
      } else if (f == "headers") {
        if (!field.IsObject()) problem = bad("'headers' is not an object of strings");
        else
          for (const auto& [h, hv] : field.GetObject()) {
            if (!hv.IsString()) {
              problem = bad("'headers' is not an object of strings");
              break;
            }
            c.headers.emplace(std::string(h.GetString(), h.GetStringLength()), std::string(hv.GetString(), hv.GetStringLength()));
          }
      } else if (f == "timeout") {
        if (!field.IsNumber() || field.GetDouble() <= 0 || field.GetDouble() > 3600)
          problem = bad("'timeout' must be seconds between 0 and 3600");
        else c.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(field.GetDouble() * 1000));
      } else if (f == "enabled") {
        if (!field.IsBool()) problem = bad("'enabled' is not true or false");
        else c.enabled = field.GetBool();
      } else {
        problem = bad(fmt::format("has an unknown field '{}'", utf8_prefix(f, 40)));
      }
      if (problem) return *problem;
    }
    if (c.command.empty() == c.url.empty()) return bad("needs exactly one of 'command' (stdio) and 'url' (HTTP)");
    if (!c.url.empty() && c.url.rfind("http://", 0) != 0 && c.url.rfind("https://", 0) != 0)
      return bad("'url' must start with http:// or https://");
    if (c.url.find_first_of("?#") != std::string::npos) return bad("'url' must have no query or fragment");
    if (c.is_stdio() && (!c.headers.empty() || !c.bearer_token_env.empty()))
      return bad("'headers' and 'bearer_token_env' belong to HTTP servers");
    if (!c.is_stdio() && (!c.args.empty() || !c.env.empty() || !c.cwd.empty()))
      return bad("'args', 'env' and 'cwd' belong to stdio servers");
    for (const auto& e : c.env)
      if (!valid_env_entry(e)) return bad(fmt::format("'env' entry '{}' is not NAME or NAME=value", utf8_prefix(e, 40)));
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<std::string> child_environment(const server_config& config,
                                           const std::function<const char*(const char*)>& lookup) {
  std::vector<std::string> out;
  for (const auto& entry : config.env) {
    if (entry.find('=') != std::string::npos) {
      out.push_back(entry);
    } else if (const char* value = lookup(entry.c_str()); value != nullptr) {
      out.push_back(entry + "=" + value);
    }
  }
  return out;
}

}  // namespace stargazer::tools::mcp
