// The OpenAI-compatible wire format (request encoding, response parsing, error excerpts,
// backoff): pure functions, kept out of openai_client.cpp (coroutines, Beast) so unit tests
// and the fuzz build compile them alone.
#include "stargazer/llm/openai_client.hpp"

#include "stargazer/core/json_value.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/core/utf8.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace stargazer::llm {

using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

namespace {

constexpr auto parse_flags = rapidjson::kParseIterativeFlag;  // no recursion on hostile nesting
// Serialising a value (an error object, object-shaped arguments) recurses per level, so a
// response nested deeper is refused; real ones nest about six levels.
constexpr unsigned max_response_depth = 64;

// JSON needs valid UTF-8: an invalid byte becomes U+FFFD (user text may arrive truncated
// mid-character).
void write_text(json_writer& w, std::string_view text) {
  if (utf8::is_valid(text)) {
    w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
    return;
  }
  const auto repaired = utf8::repaired(text);
  w.String(repaired.data(), static_cast<rapidjson::SizeType>(repaired.size()));
}

void write_key_text(json_writer& w, const char* key, std::string_view text) {
  w.Key(key);
  write_text(w, text);
}

std::string_view text_of(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

const rapidjson::Value* member(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  const auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

std::string serialize(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  json_writer w(buffer);
  v.Accept(w);
  return {buffer.GetString(), buffer.GetSize()};
}

failure bad(std::string detail) { return failure{failure::kind::bad_response, 0, std::move(detail)}; }

// A count is clamped to [0, 10^15]: more than any real response uses, and far enough
// from the int64 limit that a day's sums of them cannot overflow. (A number beyond int64,
// 1e40 say, was cast from double to int64: undefined behaviour, found by fuzz_llm_response.)
std::int64_t token_count(const rapidjson::Value* usage, const char* name) {
  constexpr std::int64_t most_counted = 1'000'000'000'000'000;
  if (usage == nullptr) return 0;
  const auto* v = member(*usage, name);
  if (v == nullptr) return 0;
  if (v->IsInt64()) return std::clamp<std::int64_t>(v->GetInt64(), 0, most_counted);
  if (v->IsNumber()) {
    const double d = v->GetDouble();
    if (!(d > 0)) return 0;
    return d >= static_cast<double>(most_counted) ? most_counted : static_cast<std::int64_t>(d);
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Pure functions

std::string participant_name(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size() && out.size() < 64;) {
    const char c = name[i];
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                         c == '-';
    out.push_back(allowed ? c : '_');
    i += std::max<std::size_t>(1, utf8::sequence_length(name.substr(i)));
  }
  return out;
}

std::string encode_request(const request& req, const openai_settings& defaults) {
  rapidjson::StringBuffer buffer;
  json_writer w(buffer);
  w.StartObject();
  write_key_text(w, "model", req.model.empty() ? defaults.model : req.model);

  w.Key("messages");
  w.StartArray();
  for (const auto& m : req.messages) {
    w.StartObject();
    write_key_text(w, "role", to_string(m.role));
    w.Key("content");
    // An assistant turn that only calls tools has null content (the API's own shape).
    if (m.role == role::assistant && m.content.empty() && !m.tool_calls.empty()) w.Null();
    // Models read who spoke from the text; the `name` field alone is often ignored.
    else if (m.role == role::user && !m.name.empty()) write_text(w, m.name + ": " + m.content);
    else write_text(w, m.content);
    if (m.role != role::tool) {
      if (const auto name = participant_name(m.name); !name.empty()) write_key_text(w, "name", name);
    }
    if (m.role == role::assistant && !m.tool_calls.empty()) {
      w.Key("tool_calls");
      w.StartArray();
      for (const auto& call : m.tool_calls) {
        w.StartObject();
        write_key_text(w, "id", call.id);
        write_key_text(w, "type", "function");
        w.Key("function");
        w.StartObject();
        write_key_text(w, "name", call.name);
        write_key_text(w, "arguments", call.arguments_json);  // a JSON text, sent as a string
        w.EndObject();
        w.EndObject();
      }
      w.EndArray();
    }
    if (m.role == role::tool) write_key_text(w, "tool_call_id", m.tool_call_id);
    w.EndObject();
  }
  w.EndArray();

  if (!req.tools.empty()) {
    w.Key("tools");
    w.StartArray();
    for (const auto& tool : req.tools) {
      rapidjson::Document parameters;
      parameters.Parse<parse_flags>(tool.parameters_json.data(), tool.parameters_json.size());
      if (parameters.HasParseError() || !parameters.IsObject())
        throw std::invalid_argument(fmt::format("tool '{}': parameters_json is not a JSON object", tool.name));
      w.StartObject();
      write_key_text(w, "type", "function");
      w.Key("function");
      w.StartObject();
      write_key_text(w, "name", tool.name);
      if (!tool.description.empty()) write_key_text(w, "description", tool.description);
      w.Key("parameters");
      parameters.Accept(w);
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }

  if (const auto t = req.temperature ? req.temperature : defaults.temperature) {
    w.Key("temperature");
    w.Double(*t);
  }
  if (const auto n = req.max_tokens ? req.max_tokens : defaults.max_tokens) {
    w.Key("max_tokens");
    w.Int(*n);
  }
  if (const auto p = req.top_p ? req.top_p : defaults.top_p) {
    w.Key("top_p");
    w.Double(*p);
  }
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

outcome parse_response(std::string_view body) {
  if (json::nesting_depth(body) > max_response_depth)
    return bad(fmt::format("JSON nested deeper than {} levels", max_response_depth));
  rapidjson::Document doc;
  doc.Parse<parse_flags>(body.data(), body.size());
  if (doc.HasParseError())
    return bad(fmt::format("invalid JSON at offset {}: {}", doc.GetErrorOffset(),
                           rapidjson::GetParseError_En(doc.GetParseError())));
  if (!doc.IsObject()) return bad("the body is not a JSON object");

  const auto* choices = member(doc, "choices");
  if (choices == nullptr || !choices->IsArray() || choices->Empty()) {
    // Some gateways answer 200 with an error object.
    if (const auto* error = member(doc, "error"))
      return bad("an error instead of a completion: " + error_excerpt(serialize(*error)));
    return bad("no choices in the completion");
  }
  const auto& choice = (*choices)[0];
  const auto* message = member(choice, "message");
  if (message == nullptr || !message->IsObject()) return bad("choices[0] has no message object");

  completion out;
  if (const auto* content = member(*message, "content"); content != nullptr && !content->IsNull()) {
    if (content->IsString()) {
      out.content = std::string(text_of(*content));
    } else if (content->IsArray()) {  // content parts: concatenate the text ones
      for (const auto& part : content->GetArray())
        if (const auto* text = member(part, "text"); text != nullptr && text->IsString()) out.content += text_of(*text);
    } else {
      return bad("choices[0].message.content is neither a string nor null");
    }
  }

  if (const auto* calls = member(*message, "tool_calls"); calls != nullptr && !calls->IsNull()) {
    if (!calls->IsArray()) return bad("choices[0].message.tool_calls is not an array");
    for (rapidjson::SizeType i = 0; i < calls->Size(); ++i) {
      const auto& call = (*calls)[i];
      const auto* function = member(call, "function");
      const auto* name = function != nullptr ? member(*function, "name") : nullptr;
      if (name == nullptr || !name->IsString() || name->GetStringLength() == 0)
        return bad(fmt::format("tool_calls[{}] has no function name", i));
      tool_call tc;
      tc.name = std::string(text_of(*name));
      if (const auto* id = member(call, "id"); id != nullptr && id->IsString() && id->GetStringLength() > 0)
        tc.id = std::string(text_of(*id));
      else
        tc.id = fmt::format("call_{}", i);  // some providers omit ids; the tool message needs one
      const auto* arguments = member(*function, "arguments");
      if (arguments == nullptr || arguments->IsNull()) tc.arguments_json = "{}";
      else if (arguments->IsString()) tc.arguments_json = std::string(text_of(*arguments));
      else tc.arguments_json = serialize(*arguments);  // non-conforming: an object instead of its text
      out.tool_calls.push_back(std::move(tc));
    }
  }

  if (const auto* reason = member(choice, "finish_reason"); reason != nullptr && reason->IsString())
    out.finish_reason = std::string(text_of(*reason));
  if (const auto* model = member(doc, "model"); model != nullptr && model->IsString())
    out.model = std::string(text_of(*model));
  const auto* usage = member(doc, "usage");
  out.usage.prompt_tokens = token_count(usage, "prompt_tokens");
  out.usage.completion_tokens = token_count(usage, "completion_tokens");
  return out;
}

std::string error_excerpt(std::string_view body, std::string_view secret, std::size_t limit) {
  std::string text;
  rapidjson::Document doc;
  doc.Parse<parse_flags>(body.data(), body.size());
  if (!doc.HasParseError()) {
    const rapidjson::Value* error = member(doc, "error");
    if (error == nullptr && doc.IsObject() && member(doc, "message") != nullptr) error = &doc;
    if (error != nullptr && error->IsString()) {
      text = std::string(text_of(*error));
    } else if (error != nullptr) {
      if (const auto* m = member(*error, "message"); m != nullptr && m->IsString()) text = std::string(text_of(*m));
      for (const char* extra : {"type", "code"})
        if (const auto* v = member(*error, extra); v != nullptr && (v->IsString() || v->IsNumber()))
          text += fmt::format(" ({}: {})", extra, v->IsString() ? std::string(text_of(*v)) : serialize(*v));
    }
  }
  if (text.empty()) text = std::string(body);

  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n' || c == '\r' || c == '\t') out.push_back(' ');
    else if (u < 0x20 || u == 0x7F) out += fmt::format("\\x{:02x}", u);
    else out.push_back(c);
  }
  if (!secret.empty()) {
    for (auto at = out.find(secret); at != std::string::npos; at = out.find(secret, at + 10))
      out.replace(at, secret.size(), "<redacted>");
  }
  if (out.size() > limit) {
    out.resize(utf8_prefix(out, limit).size());
    out += "...";
  }
  return out;
}

std::chrono::milliseconds backoff_delay(const openai_settings& s, int retry, double unit_random) {
  const double exponent = std::clamp(retry - 1, 0, 30);
  const double full = std::min(static_cast<double>(s.backoff_max.count()),
                               static_cast<double>(s.backoff_initial.count()) * std::pow(2.0, exponent));
  const double u = std::clamp(unit_random, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(full / 2 + full / 2 * u));
}

}  // namespace stargazer::llm
