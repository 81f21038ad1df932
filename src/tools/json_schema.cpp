#include "stargazer/tools/json_schema.hpp"

#include "stargazer/core/json_value.hpp"

#include <fmt/format.h>

#include <cmath>
#include <string_view>

namespace stargazer::tools {

namespace {

std::string_view type_of(const rapidjson::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "boolean";
  if (v.IsObject()) return "object";
  if (v.IsArray()) return "array";
  if (v.IsString()) return "string";
  if (v.IsInt64() || v.IsUint64() || (v.IsDouble() && std::floor(v.GetDouble()) == v.GetDouble())) return "integer";
  return "number";
}

bool has_type(const rapidjson::Value& v, std::string_view type) {
  const auto actual = type_of(v);
  return actual == type || (type == "number" && actual == "integer");
}

std::string where(const std::string& path) { return path.empty() ? std::string("arguments") : path; }

std::optional<std::string> check(const rapidjson::Value& schema, const rapidjson::Value& v, const std::string& path) {
  if (!schema.IsObject()) return std::nullopt;
  if (const auto t = schema.FindMember("type"); t != schema.MemberEnd()) {
    bool ok = false;
    std::string expected;
    if (t->value.IsString()) {
      ok = has_type(v, t->value.GetString());
      expected = t->value.GetString();
    } else if (t->value.IsArray()) {
      for (const auto& one : t->value.GetArray()) {
        if (!one.IsString()) continue;
        ok = ok || has_type(v, one.GetString());
        expected += (expected.empty() ? "" : " or ") + std::string(one.GetString());
      }
    } else {
      ok = true;
    }
    if (!ok) return fmt::format("{}: expected {}, got {}", where(path), expected, type_of(v));
  }
  if (const auto e = schema.FindMember("enum"); e != schema.MemberEnd() && e->value.IsArray()) {
    bool found = false;
    std::string allowed;
    for (const auto& option : e->value.GetArray()) {
      found = found || option == v;
      allowed += (allowed.empty() ? "" : ", ") + json::to_string(option);
    }
    if (!found) return fmt::format("{}: must be one of {}", where(path), allowed);
  }
  if (v.IsNumber()) {
    const double x = v.GetDouble();
    if (const auto m = schema.FindMember("minimum"); m != schema.MemberEnd() && m->value.IsNumber() && x < m->value.GetDouble())
      return fmt::format("{}: must be at least {}", where(path), m->value.GetDouble());
    if (const auto m = schema.FindMember("maximum"); m != schema.MemberEnd() && m->value.IsNumber() && x > m->value.GetDouble())
      return fmt::format("{}: must be at most {}", where(path), m->value.GetDouble());
  }
  if (v.IsString()) {
    const auto n = v.GetStringLength();
    if (const auto m = schema.FindMember("minLength"); m != schema.MemberEnd() && m->value.IsUint() && n < m->value.GetUint())
      return fmt::format("{}: must be at least {} characters", where(path), m->value.GetUint());
    if (const auto m = schema.FindMember("maxLength"); m != schema.MemberEnd() && m->value.IsUint() && n > m->value.GetUint())
      return fmt::format("{}: must be at most {} characters", where(path), m->value.GetUint());
  }
  if (v.IsArray()) {
    if (const auto m = schema.FindMember("maxItems"); m != schema.MemberEnd() && m->value.IsUint() &&
                                                       v.Size() > m->value.GetUint())
      return fmt::format("{}: at most {} items", where(path), m->value.GetUint());
    if (const auto items = schema.FindMember("items"); items != schema.MemberEnd())
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
        if (auto error = check(items->value, v[i], fmt::format("{}[{}]", where(path), i))) return error;
  }
  if (v.IsObject()) {
    const auto props = schema.FindMember("properties");
    const bool has_props = props != schema.MemberEnd() && props->value.IsObject();
    if (const auto req = schema.FindMember("required"); req != schema.MemberEnd() && req->value.IsArray())
      for (const auto& name : req->value.GetArray())
        if (name.IsString() && !v.HasMember(name))
          return fmt::format("{}: missing required argument", path.empty() ? name.GetString() : path + "." + name.GetString());
    const auto extra = schema.FindMember("additionalProperties");
    const bool closed = extra != schema.MemberEnd() && extra->value.IsFalse();
    for (const auto& member : v.GetObject()) {
      const std::string name(member.name.GetString(), member.name.GetStringLength());
      const auto child_path = path.empty() ? name : path + "." + name;
      if (has_props) {
        if (const auto p = props->value.FindMember(member.name); p != props->value.MemberEnd()) {
          if (auto error = check(p->value, member.value, child_path)) return error;
          continue;
        }
      }
      if (closed) return fmt::format("{}: unknown argument", child_path);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> validate(const rapidjson::Value& schema, const rapidjson::Value& value) {
  return check(schema, value, "");
}

}  // namespace stargazer::tools
