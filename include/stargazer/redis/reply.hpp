#pragma once
// A RESP2 reply as an owned value tree: status, error, integer, bulk string, array, nil.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::redis {

class reply {
public:
  enum class kind : std::uint8_t { status, error, integer, bulk, array, nil };

  reply() = default;
  static reply make_status(std::string s) { return reply(kind::status, std::move(s)); }
  static reply make_error(std::string s) { return reply(kind::error, std::move(s)); }
  static reply make_bulk(std::string s) { return reply(kind::bulk, std::move(s)); }
  static reply make_integer(long long v) {
    reply r(kind::integer, {});
    r.integer_ = v;
    return r;
  }
  static reply make_array(std::vector<reply> elements) {
    reply r(kind::array, {});
    r.elements_ = std::move(elements);
    return r;
  }

  kind type() const { return kind_; }
  bool is_status() const { return kind_ == kind::status; }
  bool is_error() const { return kind_ == kind::error; }
  bool is_integer() const { return kind_ == kind::integer; }
  bool is_bulk() const { return kind_ == kind::bulk; }
  bool is_array() const { return kind_ == kind::array; }
  bool is_nil() const { return kind_ == kind::nil; }
  // Status, error or bulk: the text is in str().
  bool is_string() const { return is_status() || is_error() || is_bulk(); }

  // Text of a status, error or bulk reply (empty otherwise). Binary-safe.
  const std::string& str() const { return text_; }
  std::string& str() { return text_; }
  long long integer() const { return integer_; }
  const std::vector<reply>& elements() const { return elements_; }
  std::vector<reply>& elements() { return elements_; }

  // The error's code word ("NOSCRIPT", "READONLY", "BUSYGROUP", ...), empty if not an error.
  std::string_view error_code() const;
  // The reply as an integer when it is one or a bulk/status holding one.
  std::optional<long long> to_integer() const;
  // A short, human-readable rendering for logs and test failures.
  std::string debug_string() const;

  // Used by the parser.
  void set_kind(kind k) { kind_ = k; }
  void set_integer(long long v) { integer_ = v; }

private:
  reply(kind k, std::string text) : kind_(k), text_(std::move(text)) {}

  kind kind_ = kind::nil;
  long long integer_ = 0;
  std::string text_;
  std::vector<reply> elements_;
};

}  // namespace stargazer::redis
