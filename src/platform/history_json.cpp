#include "stargazer/platform/history_json.hpp"

#include <cmath>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace stargazer::platform {

namespace {

void put(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
}

std::string get(const rapidjson::Value& o, const char* key) {
  const auto it = o.FindMember(key);
  if (it == o.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

}  // namespace

std::string history_to_json(const std::vector<history_message>& messages) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartArray();
  for (const auto& m : messages) {
    w.StartObject();
    put(w, "user_id", m.user_id);
    put(w, "user_name", m.user_name);
    put(w, "text", m.text);
    w.Key("timestamp");
    w.Double(std::isfinite(m.timestamp) ? m.timestamp : 0.0);  // JSON has no infinity; the writer would refuse it
    put(w, "message_id", m.message_id);
    w.Key("is_bot");
    w.Bool(m.is_bot);
    put(w, "reply_to_id", m.reply_to_id);
    put(w, "reactions", m.reactions);
    w.EndObject();
  }
  w.EndArray();
  return {buf.GetString(), buf.GetSize()};
}

std::optional<std::vector<history_message>> history_from_json(std::string_view json) {
  // Iterative: the text comes from another process. Not kParseFullPrecisionFlag, although
  // the default may read a timestamp one ulp off: RapidJSON 1.1.0's full-precision path
  // reads out of bounds on long exponents (test/fuzz/fuzz_history.cpp found both).
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsArray()) return std::nullopt;
  std::vector<history_message> out;
  for (const auto& o : doc.GetArray()) {
    if (!o.IsObject()) return std::nullopt;
    history_message m{get(o, "user_id"), get(o, "user_name"), get(o, "text"), 0, get(o, "message_id"), false,
                      get(o, "reply_to_id"), get(o, "reactions")};
    if (const auto ts = o.FindMember("timestamp"); ts != o.MemberEnd() && ts->value.IsNumber())
      m.timestamp = ts->value.GetDouble();
    if (const auto bot = o.FindMember("is_bot"); bot != o.MemberEnd() && bot->value.IsBool())
      m.is_bot = bot->value.GetBool();
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace stargazer::platform
