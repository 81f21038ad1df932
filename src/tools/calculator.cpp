// The calculator tool's evaluator: pure, kept out of builtin.cpp (coroutines, Redis) so the
// fuzz build compiles it alone.
#include "stargazer/tools/builtin.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <vector>

namespace stargazer::tools {

namespace {

// Recursive descent over: expr = term {(+|-) term}; term = power {(*|/|%) power};
// power = unary [^ power]; unary = [-|+] unary | primary; primary = number | name |
// name(args) | (expr). Depth and length are bounded, so no input can exhaust the stack.
class expression_parser {
public:
  explicit expression_parser(std::string_view text) : text_(text) {}

  double parse() {
    const double v = expression();
    skip_space();
    if (pos_ != text_.size()) fail(fmt::format("unexpected '{}'", text_[pos_]));
    return v;
  }

  struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

private:
  static constexpr int max_depth = 64;

  [[noreturn]] void fail(const std::string& what) const {
    throw error(fmt::format("{} at position {}", what, pos_ + 1));
  }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool take(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  struct depth_guard {
    explicit depth_guard(expression_parser& p) : p(p) {
      if (++p.depth_ > max_depth) p.fail("expression nested too deeply");
    }
    ~depth_guard() { --p.depth_; }
    expression_parser& p;
  };

  double expression() {
    depth_guard guard(*this);
    double v = term();
    for (;;) {
      if (take('+')) v += term();
      else if (take('-')) v -= term();
      else return v;
    }
  }
  double term() {
    double v = power();
    for (;;) {
      if (take('*')) v *= power();
      else if (take('/')) {
        const double d = power();
        if (d == 0) fail("division by zero");
        v /= d;
      } else if (take('%')) {
        const double d = power();
        if (d == 0) fail("division by zero");
        v = std::fmod(v, d);
      } else {
        return v;
      }
    }
  }
  double power() {
    const double base = unary();
    if (take('^')) {
      depth_guard guard(*this);
      return std::pow(base, power());
    }
    return base;
  }
  double unary() {
    depth_guard guard(*this);
    if (take('-')) return -unary();
    if (take('+')) return unary();
    return primary();
  }
  double primary() {
    skip_space();
    if (take('(')) {
      const double v = expression();
      if (!take(')')) fail("missing ')'");
      return v;
    }
    if (pos_ < text_.size() && (std::isdigit(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.'))
      return number();
    if (pos_ < text_.size() && std::isalpha(static_cast<unsigned char>(text_[pos_]))) return named();
    if (pos_ >= text_.size()) fail("unexpected end");
    fail(fmt::format("unexpected '{}'", text_[pos_]));
  }
  double number() {
    const auto start = pos_;
    while (pos_ < text_.size() && (std::isdigit(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.')) ++pos_;
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      auto p = pos_ + 1;
      if (p < text_.size() && (text_[p] == '+' || text_[p] == '-')) ++p;
      if (p < text_.size() && std::isdigit(static_cast<unsigned char>(text_[p]))) {
        pos_ = p;
        while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      }
    }
    const std::string digits(text_.substr(start, pos_ - start));
    char* end = nullptr;
    const double v = std::strtod(digits.c_str(), &end);
    if (end != digits.c_str() + digits.size()) fail("malformed number '" + digits + "'");
    return v;
  }
  double named() {
    const auto start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) ++pos_;
    const std::string name(text_.substr(start, pos_ - start));
    if (!take('(')) {
      if (name == "pi") return M_PI;
      if (name == "e") return M_E;
      fail("unknown name '" + name + "'");
    }
    std::vector<double> args;
    if (!take(')')) {
      do args.push_back(expression());
      while (take(','));
      if (!take(')')) fail("missing ')' after the arguments of " + name);
    }
    const auto need = [&](std::size_t n) {
      if (args.size() != n) fail(fmt::format("{} takes {} argument{}", name, n, n == 1 ? "" : "s"));
    };
    using fn1 = double (*)(double);
    static const std::map<std::string, fn1, std::less<>> one{
        {"sqrt", [](double x) { return std::sqrt(x); }},   {"abs", [](double x) { return std::fabs(x); }},
        {"sin", [](double x) { return std::sin(x); }},     {"cos", [](double x) { return std::cos(x); }},
        {"tan", [](double x) { return std::tan(x); }},     {"asin", [](double x) { return std::asin(x); }},
        {"acos", [](double x) { return std::acos(x); }},   {"atan", [](double x) { return std::atan(x); }},
        {"ln", [](double x) { return std::log(x); }},      {"log", [](double x) { return std::log10(x); }},
        {"log10", [](double x) { return std::log10(x); }}, {"log2", [](double x) { return std::log2(x); }},
        {"exp", [](double x) { return std::exp(x); }},     {"floor", [](double x) { return std::floor(x); }},
        {"ceil", [](double x) { return std::ceil(x); }},   {"round", [](double x) { return std::round(x); }}};
    if (const auto it = one.find(name); it != one.end()) {
      need(1);
      return it->second(args[0]);
    }
    if (name == "pow") {
      need(2);
      return std::pow(args[0], args[1]);
    }
    if (name == "min" || name == "max") {
      if (args.empty()) fail(name + " needs at least one argument");
      return name == "min" ? *std::min_element(args.begin(), args.end()) : *std::max_element(args.begin(), args.end());
    }
    fail("unknown function '" + name + "'");
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

std::variant<double, std::string> evaluate_expression(std::string_view expression) {
  if (expression.size() > 1000) return std::string("the expression is longer than 1000 characters");
  try {
    const double v = expression_parser(expression).parse();
    if (std::isnan(v)) return std::string("the result is not a number (outside a function's domain)");
    if (std::isinf(v)) return std::string("the result is infinite");
    return v;
  } catch (const expression_parser::error& e) {
    return std::string(e.what());
  }
}

}  // namespace stargazer::tools
