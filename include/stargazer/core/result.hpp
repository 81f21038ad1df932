#pragma once
// result<T>: a value or a std::error_code, for expected failures at I/O edges (the
// standard library's std::expected arrives only in C++23).

#include <optional>
#include <system_error>
#include <utility>

namespace stargazer {

template <class T>
class [[nodiscard]] result {
public:
  result(T value) : value_(std::move(value)) {}                      // NOLINT: implicit by design
  result(std::error_code ec) : error_(ec) {}                          // NOLINT
  template <class E, class = std::enable_if_t<std::is_error_code_enum_v<E>>>
  result(E e) : error_(make_error_code(e)) {}                         // NOLINT

  bool has_value() const { return value_.has_value(); }
  explicit operator bool() const { return has_value(); }
  std::error_code error() const { return error_; }

  // Throws std::system_error when there is no value.
  T& value() & {
    if (!value_) throw std::system_error(error_);
    return *value_;
  }
  const T& value() const& {
    if (!value_) throw std::system_error(error_);
    return *value_;
  }
  T&& value() && {
    if (!value_) throw std::system_error(error_);
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

private:
  std::optional<T> value_;
  std::error_code error_;
};

}  // namespace stargazer
