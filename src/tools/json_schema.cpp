#include "stargazer/tools/json_schema.hpp"

#include "stargazer/core/json_value.hpp"

#include <fmt/format.h>
#include <rapidjson/error/en.h>
#include <rapidjson/pointer.h>
#include <rapidjson/schema.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

// RapidJSON 1.1.0 (Debian 12) findings that shape this file; each was reproduced:
//  - `{"$ref":"#"}`, a $ref chain that loops, and `{"anyOf":[{"$ref":"#"}]}` recurse until the
//    stack overflows (compiling, resp. validating); so does a long chain of subschemas.
//  - A $ref to a non-object ("#/type"), `"patternProperties": 5`, a `dependencies` list with a
//    non-string, `true`/`false` subschemas in allOf/anyOf/oneOf/not/items fail assertions or
//    dereference null/uninitialised schema pointers. RapidJSON compiles *every* object of the
//    document as a schema (enum values, the properties map itself), so the hazards must be kept
//    out of all of them, not only out of schema positions.
//  - Duplicate names in a `dependencies` map leave a validator pointer uninitialised (found by
//    fuzzing).
//  - Its regex engine asserts on "(a", "()a", "{1}" (so would an assertion-free build corrupt
//    memory), recurses forever on "(a*)*", overflows the stack on "a{0,200000}", says an
//    unanchored nullable pattern ("a*") does not match "b", and takes O(length * states^2) on
//    patterns such as "[a-z]{1,120}" (about 10 s for a 100 KB string).
//  - `"#/$defs/x"` is an invalid pointer to it ('$' must be %-escaped in a URI fragment), so
//    the ref was silently ignored.
//  - With patternProperties and `additionalProperties: false`, a property matched only by a
//    pattern is checked against a stale schema (the previous property's, or the object's).
//  - Numeric exclusiveMinimum/exclusiveMaximum (draft 6+) and `const` are ignored.
// So compile() builds a normalised copy that RapidJSON handles, and check() runs the validator
// on a budgeted allocator.

namespace stargazer::tools {

namespace {

using rapidjson::SizeType;
using rapidjson::Value;

constexpr unsigned max_depth = 64;                      // schema and argument nesting
constexpr std::size_t max_schema_values = 100'000;      // in the schema as given
constexpr std::size_t max_compiled_objects = 2048;      // RapidJSON compiles in O(n^2)
constexpr unsigned max_ref_links = 64;                  // $ref -> $ref -> ...
constexpr int max_combination_depth = 32;               // allOf/anyOf/oneOf/not/$ref on one value
constexpr std::size_t max_regex_states = 1024;          // NFA states
constexpr std::size_t max_regex_work = 2048;            // NFA steps per character matched
constexpr unsigned max_regex_groups = 32;               // nested parentheses
constexpr unsigned max_regex_count = 1000;              // {n,m}
constexpr std::size_t max_check_bytes = 32u << 20;      // validator state alive at once
constexpr std::size_t max_check_allocations = 1'000'000;
constexpr std::size_t max_enum_listed = 10;             // values an error message lists

// Names this file adds to the normalised schema; RapidJSON ignores unknown keywords.
constexpr const char* refs_key = "x-refs";          // root: array of $ref targets
constexpr const char* pattern_key = "x-pattern";    // the pattern as written, for messages
constexpr const char* unknown_key = "x-unknown";    // {"not":{}} standing for additionalProperties false

struct schema_error {
  std::string message;
};

const Value* member(const Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  const auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

std::string_view view(const Value& string) { return {string.GetString(), string.GetStringLength()}; }

// Nesting depth (as json::nesting_depth counts brackets) and number of values, without recursing;
// stops early once deeper than `limit`.
struct shape {
  unsigned depth = 0;
  std::size_t values = 0, objects = 0;
};

shape measure(const Value& root, unsigned limit) {
  shape s;
  std::vector<std::pair<const Value*, unsigned>> todo{{&root, 0u}};
  while (!todo.empty()) {
    const auto [v, outer] = todo.back();
    todo.pop_back();
    ++s.values;
    if (v->IsObject()) {
      ++s.objects;
      s.depth = std::max(s.depth, outer + 1);
      if (s.depth > limit) return s;
      for (const auto& m : v->GetObject()) todo.emplace_back(&m.value, outer + 1);
    } else if (v->IsArray()) {
      s.depth = std::max(s.depth, outer + 1);
      if (s.depth > limit) return s;
      for (const auto& e : v->GetArray()) todo.emplace_back(&e, outer + 1);
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// ECMA-262 pattern -> RapidJSON regex (internal/regex.h), or nullopt when the pattern cannot be
// checked safely or always matches. RapidJSON's engine is a Thompson NFA: it never backtracks,
// but its parser asserts on some input, an empty-matching part under * or + is an epsilon loop
// it follows forever, and it does per character work proportional to the epsilon closures of
// the active states. So the pattern is parsed here into a tree, written back in the plain
// syntax that engine parses, and its NFA is built the way the engine builds it to bound that
// work. Counted repetitions are written out, optional copies nested (x{1,3} -> x(x(x)?)?, one
// small closure per copy, where the engine's own x x? x? chains every optional copy).

struct unsupported_regex {};

class regex_translator {
public:
  explicit regex_translator(std::string_view pattern) : source_(pattern) {}

  std::optional<std::string> translate() {
    try {
      if (!decode()) return std::nullopt;
      const int root = disjunction(0);
      if (pos_ != cps_.size()) return std::nullopt;  // a ')' without '('
      if (root < 0) return std::nullopt;             // "", "^", "^$": nothing to check
      // RapidJSON's anchors apply to the whole pattern; "^a|b" anchors only the first branch.
      if ((anchor_begin_ || anchor_end_) && top_alternatives_ > 1) return std::nullopt;
      // A pattern matching the empty string matches every string unless anchored at both ends
      // (RapidJSON would wrongly refuse "b" for "a*").
      if (nodes_[static_cast<std::size_t>(root)].nullable && !(anchor_begin_ && anchor_end_)) return std::nullopt;
      if (nodes_[static_cast<std::size_t>(root)].states + 1 > max_regex_states || work(root) > max_regex_work)
        return std::nullopt;
      return (anchor_begin_ ? "^" : "") + emit(root) + (anchor_end_ ? "$" : "");
    } catch (const unsupported_regex&) {
      return std::nullopt;
    }
  }

private:
  struct node {
    enum kind_t { leaf, cat, alt, opt, star, plus } kind;
    std::string text;  // leaf: one character or class, in RapidJSON's syntax
    std::vector<int> kids;
    bool nullable = false;
    std::size_t states = 0;  // NFA states RapidJSON makes for it
  };
  using ranges = std::vector<std::pair<char32_t, char32_t>>;

  [[noreturn]] static void fail() { throw unsupported_regex{}; }

  static std::size_t capped(std::size_t n) { return std::min(n, max_regex_states + 1); }

  const node& at(int n) const { return nodes_[static_cast<std::size_t>(n)]; }

  int add(node::kind_t kind, std::vector<int> kids, std::string text = {}) {
    node n{kind, std::move(text), std::move(kids)};
    switch (kind) {
      case node::leaf:
        n.states = 1;
        break;
      case node::cat:
      case node::alt: {
        n.states = kind == node::alt ? n.kids.size() - 1 : 0;  // a split per '|'
        unsigned nullable = 0;
        for (int k : n.kids) {
          n.states = capped(n.states + at(k).states);
          nullable += at(k).nullable ? 1 : 0;
        }
        if (kind == node::alt && nullable > 1) fail();  // two empty paths to one state
        n.nullable = kind == node::alt ? nullable == 1 : nullable == n.kids.size();
        break;
      }
      default:
        // A repeated part that can match empty makes an epsilon loop (or two empty paths).
        if (at(n.kids[0]).nullable) fail();
        n.states = capped(at(n.kids[0]).states + 1);
        n.nullable = kind != node::plus;
    }
    if (n.states > max_regex_states || nodes_.size() > 4 * max_regex_states) fail();
    nodes_.push_back(std::move(n));
    return static_cast<int>(nodes_.size()) - 1;
  }

  bool decode() {  // strict UTF-8 without U+0000 (RapidJSON's engine stops there)
    for (std::size_t i = 0; i < source_.size();) {
      const auto c = static_cast<unsigned char>(source_[i]);
      char32_t cp;
      std::size_t n;
      if (c < 0x80) cp = c, n = 1;
      else if (c >= 0xC2 && c <= 0xDF) cp = c & 0x1Fu, n = 2;
      else if (c >= 0xE0 && c <= 0xEF) cp = c & 0x0Fu, n = 3;
      else if (c >= 0xF0 && c <= 0xF4) cp = c & 0x07u, n = 4;
      else return false;
      if (i + n > source_.size()) return false;
      for (std::size_t k = 1; k < n; ++k) {
        const auto cc = static_cast<unsigned char>(source_[i + k]);
        if ((cc & 0xC0) != 0x80) return false;
        cp = (cp << 6) | (cc & 0x3Fu);
      }
      if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF) ||
          cp == 0)
        return false;
      cps_.push_back(cp);
      i += n;
    }
    return true;
  }

  static void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool at_end() const { return pos_ >= cps_.size(); }
  char32_t peek() const { return at_end() ? 0 : cps_[pos_]; }
  char32_t take() {
    if (at_end()) fail();
    return cps_[pos_++];
  }

  // -1 for an empty alternative ("a|", "()" break RapidJSON's parser, so callers refuse it).
  int disjunction(unsigned depth) {
    std::vector<int> alternatives{alternative(depth)};
    while (peek() == '|') {
      ++pos_;
      alternatives.push_back(alternative(depth));
    }
    if (depth == 0) top_alternatives_ = alternatives.size();
    if (alternatives.size() == 1) return alternatives.front();
    if (std::find(alternatives.begin(), alternatives.end(), -1) != alternatives.end()) fail();
    return add(node::alt, std::move(alternatives));
  }

  int alternative(unsigned depth) {
    std::vector<int> items;
    while (!at_end() && peek() != '|' && peek() != ')') {
      if (peek() == '^') {
        if (depth != 0 || pos_ != 0) fail();
        anchor_begin_ = true;
        ++pos_;
        continue;
      }
      if (peek() == '$') {
        if (depth != 0 || pos_ + 1 != cps_.size()) fail();
        anchor_end_ = true;
        ++pos_;
        continue;
      }
      const int a = atom(depth);
      quantify(a, items);
    }
    if (items.empty()) return -1;
    return items.size() == 1 ? items.front() : add(node::cat, std::move(items));
  }

  int literal(char32_t cp) {
    std::string text;
    if (cp < 0x80 && std::string_view("^$|()?*+.[]{}\\").find(static_cast<char>(cp)) != std::string_view::npos)
      text += '\\';
    append_utf8(text, cp);
    return add(node::leaf, {}, std::move(text));
  }

  int atom(unsigned depth) {
    const char32_t c = take();
    switch (c) {
      case '(': {
        if (peek() == '?') {  // only (?:...); lookaround and named groups are not supported
          if (pos_ + 1 >= cps_.size() || cps_[pos_ + 1] != ':') fail();
          pos_ += 2;
        }
        if (depth + 1 > max_regex_groups) fail();
        const int inner = disjunction(depth + 1);
        if (inner < 0 || take() != ')') fail();
        return inner;
      }
      case '[':
        return char_class();
      case '.':  // ECMA's '.' does not match line terminators; RapidJSON's matches anything
        return class_leaf(true, {{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}});
      case '\\':
        return escape();
      case '*':
      case '+':
      case '?':
        fail();  // nothing to repeat
      case '{': {
        const auto after = pos_;
        unsigned lo, hi;
        bool unbounded;
        --pos_;
        if (braces(lo, hi, unbounded)) fail();  // a quantifier with nothing to repeat
        pos_ = after;
        return literal('{');  // Annex B: a '{' that starts no quantifier is itself
      }
      default:
        return literal(c);  // includes ']' and '}' (Annex B)
    }
  }

  static void add_class_escape(char32_t c, ranges& out) {
    switch (c) {
      case 'd':
        out.push_back({'0', '9'});
        return;
      case 'w':
        out.insert(out.end(), {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}});
        return;
      case 's':  // ECMA WhiteSpace and LineTerminator
        out.insert(out.end(), {{0x09, 0x0D}, {0x20, 0x20}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                               {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                               {0xFEFF, 0xFEFF}});
        return;
      default:
        fail();
    }
  }

  char32_t hex(unsigned digits) {
    char32_t cp = 0;
    for (unsigned i = 0; i < digits; ++i) {
      const char32_t c = take();
      unsigned d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail();
      cp = cp * 16 + d;
    }
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) fail();  // NUL; a surrogate half
    return cp;
  }

  // One escaped character after '\' (in atoms and classes), or nullopt after adding a class
  // escape (\d \w \s) to `set`.
  std::optional<char32_t> escaped(ranges& set, bool in_class) {
    const char32_t c = take();
    switch (c) {
      case 'd':
      case 'w':
      case 's':
        add_class_escape(c, set);
        return std::nullopt;
      case 'f': return 0x0C;
      case 'n': return 0x0A;
      case 'r': return 0x0D;
      case 't': return 0x09;
      case 'v': return 0x0B;
      case 'x': return hex(2);
      case 'u': return hex(4);
      case 'b':
        if (in_class) return 0x08;
        fail();  // word boundary
      default:
        // \D \W \S in classes, \B, backreferences, \0, \c, \k, \p, \u{...}: not supported
        if (c < 0x80 && ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) fail();
        return c;  // identity escape: \. \- \/ \" ...
    }
  }

  int escape() {
    if (!at_end() && (peek() == 'D' || peek() == 'W' || peek() == 'S')) {
      ranges set;
      add_class_escape(take() - 'A' + 'a', set);
      return class_leaf(true, set);
    }
    ranges set;
    if (const auto cp = escaped(set, false)) return literal(*cp);
    return class_leaf(false, set);
  }

  int char_class() {
    bool negate = false;
    if (peek() == '^') {
      negate = true;
      ++pos_;
    }
    ranges set;
    for (bool first = true;; first = false) {
      if (peek() == ']') {
        if (first) fail();  // [] and [^] are not supported
        ++pos_;
        break;
      }
      const auto lo = class_atom(set);
      if (lo && peek() == '-' && pos_ + 1 < cps_.size() && cps_[pos_ + 1] != ']') {
        ++pos_;
        const auto hi = class_atom(set);
        if (!hi || *hi < *lo) fail();
        set.push_back({*lo, *hi});
      } else if (lo) {
        set.push_back({*lo, *lo});
      }
    }
    return class_leaf(negate, set);
  }

  std::optional<char32_t> class_atom(ranges& set) {
    const char32_t c = take();
    if (c != '\\') return c;
    return escaped(set, true);
  }

  // "[...]" in RapidJSON's syntax: ']' '\' '^' '[' escaped, a literal '-' first (its only
  // unambiguous place there; it has no "\-").
  int class_leaf(bool negate, const ranges& set) {
    std::string body;
    bool dash = false;
    const auto add_cp = [&body](char32_t cp) {
      if (cp == ']' || cp == '\\' || cp == '^' || cp == '[') body += '\\';
      append_utf8(body, cp);
    };
    for (auto [lo, hi] : set) {
      if (lo == '-') dash = true, ++lo;
      if (hi == '-' && lo <= hi) dash = true, --hi;
      if (lo > hi) continue;
      add_cp(lo);
      if (hi > lo) {
        body += '-';
        add_cp(hi);
      }
    }
    return add(node::leaf, {}, std::string("[") + (negate ? "^" : "") + (dash ? "-" : "") + body + "]");
  }

  // "{n}", "{n,}", "{n,m}" at pos_; false (pos_ unchanged) when this is no quantifier.
  bool braces(unsigned& lo, unsigned& hi, bool& unbounded) {
    const auto start = pos_;
    const auto number = [this](unsigned& n) {
      if (peek() < '0' || peek() > '9') return false;
      n = 0;
      while (peek() >= '0' && peek() <= '9') n = std::min<unsigned>(n * 10 + (take() - '0'), max_regex_count + 1);
      return true;
    };
    ++pos_;  // '{'
    unbounded = false;
    if (number(lo)) {
      hi = lo;
      bool ok = true;
      if (peek() == ',') {
        ++pos_;
        if (peek() == '}') unbounded = true;
        else ok = number(hi);
      }
      if (ok && peek() == '}') {
        ++pos_;
        return true;
      }
    }
    pos_ = start;
    return false;
  }

  // Appends atom `a`, with the quantifier that follows it if any, to `items`.
  void quantify(int a, std::vector<int>& items) {
    unsigned lo = 1, hi = 1;
    bool unbounded = false;
    const char32_t c = peek();
    if (c == '*') lo = 0, unbounded = true, ++pos_;
    else if (c == '+') lo = 1, unbounded = true, ++pos_;
    else if (c == '?') lo = 0, hi = 1, ++pos_;
    else if (c != '{' || !braces(lo, hi, unbounded)) {
      items.push_back(a);
      return;
    }
    if (peek() == '?') ++pos_;  // lazy: whether a match exists is the same
    if (lo > max_regex_count || (!unbounded && (hi > max_regex_count || hi < lo || hi == 0))) fail();
    if ((unbounded ? lo + 1 : hi) * at(a).states > max_regex_states) fail();  // before writing copies out
    const unsigned copies = unbounded ? (lo == 0 ? 0 : lo - 1) : lo;
    for (unsigned i = 0; i < copies; ++i) items.push_back(a);
    if (unbounded) {
      items.push_back(add(lo == 0 ? node::star : node::plus, {a}));
    } else if (hi > lo) {
      int optional = add(node::opt, {a});
      for (unsigned i = lo + 1; i < hi; ++i) optional = add(node::opt, {add(node::cat, {a, optional})});
      items.push_back(optional);
    }
  }

  // The text RapidJSON parses into the NFA `build` makes.
  std::string emit(int n) const {
    const node& x = at(n);
    switch (x.kind) {
      case node::leaf:
        return x.text;
      case node::cat:
      case node::alt: {
        std::string out;
        for (int k : x.kids) {
          if (x.kind == node::alt && !out.empty()) out += '|';
          out += at(k).kind == node::alt ? "(" + emit(k) + ")" : emit(k);
        }
        return out;
      }
      default: {
        const int k = x.kids[0];
        return (at(k).kind == node::leaf ? emit(k) : "(" + emit(k) + ")") +
               (x.kind == node::opt ? "?" : x.kind == node::star ? "*" : "+");
      }
    }
  }

  // RapidJSON's NFA (internal/regex.h: Eval), to count the work per input character: for each
  // active state that matches, AddState() walks the epsilon closure of its successor, every split
  // again each time; unanchored, it also adds the start state's closure once per active state.
  struct state {
    int out = -1, out1 = -1;
    bool split = false;
  };
  struct frag {
    int start;
    std::vector<int> outs;  // states whose `out` is still open
  };

  int new_state(bool split, int out1 = -1) {
    nfa_.push_back({-1, out1, split});
    return static_cast<int>(nfa_.size()) - 1;
  }
  void patch(const std::vector<int>& outs, int target) {
    for (int s : outs) nfa_[static_cast<std::size_t>(s)].out = target;
  }

  frag build(int n) {
    const node& x = at(n);
    switch (x.kind) {
      case node::leaf: {
        const int s = new_state(false);
        return {s, {s}};
      }
      case node::cat: {
        frag f = build(x.kids[0]);
        for (std::size_t i = 1; i < x.kids.size(); ++i) {
          frag g = build(x.kids[i]);
          patch(f.outs, g.start);
          f.outs = std::move(g.outs);
        }
        return f;
      }
      case node::alt: {
        frag f = build(x.kids.back());
        for (std::size_t i = x.kids.size() - 1; i-- > 0;) {
          frag e = build(x.kids[i]);
          const int s = new_state(true, f.start);
          nfa_[static_cast<std::size_t>(s)].out = e.start;
          e.outs.insert(e.outs.end(), f.outs.begin(), f.outs.end());
          f = {s, std::move(e.outs)};
        }
        return f;
      }
      case node::opt: {
        frag e = build(x.kids[0]);
        const int s = new_state(true, e.start);
        e.outs.push_back(s);
        return {s, std::move(e.outs)};
      }
      default: {  // star, plus
        frag e = build(x.kids[0]);
        const int s = new_state(true, e.start);
        patch(e.outs, s);
        return {x.kind == node::star ? s : e.start, {s}};
      }
    }
  }

  std::size_t closure(int s, std::vector<std::size_t>& memo) const {  // AddState calls from s
    if (s < 0) fail();
    auto& m = memo[static_cast<std::size_t>(s)];
    if (m == 0) {
      const state& x = nfa_[static_cast<std::size_t>(s)];
      m = ~std::size_t{0};  // in progress: an epsilon loop (excluded by add(), but be sure)
      m = x.split ? std::min(1 + closure(x.out, memo) + closure(x.out1, memo), max_regex_work + 1) : 1;
    } else if (m == ~std::size_t{0}) {
      fail();
    }
    return m;
  }

  std::size_t work(int root) {
    frag f = build(root);
    const int match = new_state(false);
    patch(f.outs, match);
    std::vector<std::size_t> memo(nfa_.size(), 0);
    std::size_t total = 0, active = 0;
    for (std::size_t s = 0; s < nfa_.size(); ++s) {
      if (nfa_[s].split || static_cast<int>(s) == match) continue;
      ++active;
      total = std::min(total + closure(nfa_[s].out, memo), max_regex_work + 1);
    }
    if (!anchor_begin_) total += (active + 1) * closure(f.start, memo);
    return total;
  }

  std::string_view source_;
  std::vector<char32_t> cps_;
  std::size_t pos_ = 0;
  std::size_t top_alternatives_ = 1;
  bool anchor_begin_ = false, anchor_end_ = false;
  std::vector<node> nodes_;
  std::vector<state> nfa_;
};

// ---------------------------------------------------------------------------------------------
// The normalised schema.

bool known_type(std::string_view t) {
  return t == "null" || t == "boolean" || t == "object" || t == "array" || t == "string" || t == "number" ||
         t == "integer";
}

// Keys that make RapidJSON assert or recurse when it compiles an arbitrary object as a schema.
bool hazardous_key(std::string_view k) {
  return k == "$ref" || k == "pattern" || k == "patternProperties" || k == "dependencies";
}

bool has_hazardous_object(const Value& v) {  // depth is bounded by the schema's (checked)
  if (v.IsObject()) {
    for (const auto& m : v.GetObject())
      if (hazardous_key(view(m.name)) || has_hazardous_object(m.value)) return true;
  } else if (v.IsArray()) {
    for (const auto& e : v.GetArray())
      if (has_hazardous_object(e)) return true;
  }
  return false;
}

class builder {
public:
  builder(const Value& root, rapidjson::Document::AllocatorType& allocator) : root_(root), a_(allocator) {}

  Value build() {
    Value out = schema(root_);
    for (std::size_t i = 0; i < pending_.size(); ++i) {  // schema() may add more
      const auto [slot, target] = pending_[i];
      Value entry = schema(*target);
      targets_[slot] = std::move(entry);
    }
    if (!targets_.empty()) {
      Value table(rapidjson::kArrayType);
      for (auto& t : targets_) table.PushBack(t, a_);
      out.AddMember(rapidjson::StringRef(refs_key), table, a_);
    }
    return out;
  }

private:
  void put(Value& object, const char* key, Value&& v) { object.AddMember(rapidjson::StringRef(key), v, a_); }

  Value copy(const Value& v) { return Value(v, a_); }

  Value boolean_schema(bool accept) {
    Value out(rapidjson::kObjectType);
    if (!accept) put(out, "not", Value(rapidjson::kObjectType));
    return out;
  }

  Value ref_node(const std::string& pointer) {
    Value out(rapidjson::kObjectType);
    put(out, "$ref", Value(pointer.c_str(), static_cast<SizeType>(pointer.size()), a_));
    return out;
  }

  // The JSON pointer of a local $ref ("#", "#/definitions/a", "#/$defs/a%20b"), or nullopt when
  // the object has none that RapidJSON would follow: none, remote ("x.json#/a"), or a
  // fragment that is no JSON pointer ("#foo"). Those are ignored: their siblings apply.
  static std::optional<std::vector<std::string>> local_ref(const Value& object) {
    const Value* ref = member(object, "$ref");
    if (!ref || !ref->IsString() || ref->GetStringLength() == 0 || ref->GetString()[0] != '#') return std::nullopt;
    const auto fragment = view(*ref).substr(1);
    std::string decoded;
    for (std::size_t i = 0; i < fragment.size(); ++i) {
      if (fragment[i] != '%') {
        decoded += fragment[i];
        continue;
      }
      int byte = 0;
      for (int k = 1; k <= 2; ++k) {
        if (i + k >= fragment.size()) return std::nullopt;
        const char c = fragment[i + k];
        const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return std::nullopt;
        byte = byte * 16 + d;
      }
      decoded += static_cast<char>(byte);
      i += 2;
    }
    std::vector<std::string> tokens;
    if (decoded.empty()) return tokens;
    if (decoded[0] != '/') return std::nullopt;
    std::string token;
    for (std::size_t i = 1; i <= decoded.size(); ++i) {
      if (i == decoded.size() || decoded[i] == '/') {
        tokens.push_back(std::move(token));
        token.clear();
      } else if (decoded[i] == '~') {
        if (i + 1 >= decoded.size() || (decoded[i + 1] != '0' && decoded[i + 1] != '1')) return std::nullopt;
        token += decoded[++i] == '0' ? '~' : '/';
      } else {
        token += decoded[i];
      }
    }
    return tokens;
  }

  // A member by name (the first of duplicates, as FindMember); large objects get an index so
  // that many $refs into a big definitions map stay linear.
  const Value* find(const Value& object, std::string_view name) {
    if (object.MemberCount() < 32) {
      const auto it = object.FindMember(Value(rapidjson::StringRef(name.data(), static_cast<SizeType>(name.size()))));
      return it == object.MemberEnd() ? nullptr : &it->value;
    }
    auto& index = indexes_[&object];
    if (index.empty())
      for (const auto& m : object.GetObject()) index.emplace(view(m.name), &m.value);
    const auto it = index.find(name);
    return it == index.end() ? nullptr : it->second;
  }

  const Value* resolve(const std::vector<std::string>& tokens) {
    const Value* at = &root_;
    for (const auto& t : tokens) {
      if (at->IsObject()) {
        at = find(*at, t);
        if (!at) return nullptr;
      } else if (at->IsArray()) {
        if (t.empty() || t.size() > 9 || (t.size() > 1 && t[0] == '0') ||
            !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }))
          return nullptr;
        const auto index = static_cast<SizeType>(std::stoul(t));
        if (index >= at->Size()) return nullptr;
        at = &(*at)[index];
      } else {
        return nullptr;
      }
    }
    return at;
  }

  // Where a chain of local refs ends: the first value without one; nullptr when a ref points
  // nowhere. A chain that loops (or is absurdly long) is an error.
  const Value* follow(const Value& start) {
    const Value* at = &start;
    for (unsigned links = 0;; ++links) {
      const auto tokens = at->IsObject() ? local_ref(*at) : std::nullopt;
      if (!tokens) return at;
      if (links == max_ref_links)
        throw schema_error{fmt::format("a $ref chain loops or is longer than {} links", max_ref_links)};
      at = resolve(*tokens);
      if (!at) return nullptr;
    }
  }

  // A $ref to `target` in the normalised schema: "#" for the root, else an entry of the
  // x-refs table (each target copied once, so recursive schemas stay finite).
  Value ref_to(const Value* target) {
    if (!target) return Value(rapidjson::kObjectType);  // dangling: checks nothing
    if (target->IsBool()) return boolean_schema(target->GetBool());
    if (!target->IsObject()) return Value(rapidjson::kObjectType);
    if (target == &root_) return ref_node("#");
    auto [it, added] = slots_.try_emplace(target, targets_.size());
    if (added) {
      targets_.emplace_back();
      pending_.emplace_back(it->second, target);
    }
    return ref_node(fmt::format("#/{}/{}", refs_key, it->second));
  }

  // A member of a properties/patternProperties/dependencies map. RapidJSON also compiles the
  // map itself as a schema, so a property named "dependencies" or "patternProperties" would
  // read this value as that keyword; behind a $ref it is harmless.
  Value map_entry(std::string_view name, Value value) {
    if (name != "dependencies" && name != "patternProperties") return value;
    if (value.IsObject() && value.HasMember("$ref")) return value;
    if (value.IsArray()) {  // a dependency list: the same as a schema requiring those names
      Value schema(rapidjson::kObjectType);
      put(schema, "required", std::move(value));
      value = std::move(schema);
    }
    const auto slot = targets_.size();
    targets_.push_back(std::move(value));
    return ref_node(fmt::format("#/{}/{}", refs_key, slot));
  }

  Value schema(const Value& in) {
    if (++made_ > max_compiled_objects)  // stop early; compile() counts all objects again
      throw schema_error{fmt::format("the schema has more than {} objects", max_compiled_objects)};
    if (in.IsBool()) return boolean_schema(in.GetBool());
    if (!in.IsObject()) return Value(rapidjson::kObjectType);
    if (local_ref(in)) return ref_to(follow(in));

    Value out(rapidjson::kObjectType);
    if (const Value* t = member(in, "type")) {
      Value types(rapidjson::kArrayType);
      const auto add = [&](const Value& name) {
        if (name.IsString() && known_type(view(name))) types.PushBack(copy(name), a_);
      };
      if (t->IsString()) add(*t);
      if (t->IsArray())
        for (const auto& name : t->GetArray()) add(name);
      if (!types.Empty()) put(out, "type", std::move(types));  // no known type: checks nothing
    }
    const Value* e = member(in, "enum");
    const Value* c = member(in, "const");
    if (e && e->IsArray() && !e->Empty() && !has_hazardous_object(*e)) {
      put(out, "enum", copy(*e));
    } else if (c && !has_hazardous_object(*c)) {
      Value one(rapidjson::kArrayType);
      one.PushBack(copy(*c), a_);
      put(out, "enum", std::move(one));
    }
    for (const char* name : {"allOf", "anyOf", "oneOf"}) {
      const Value* list = member(in, name);
      if (!list || !list->IsArray() || list->Empty()) continue;
      Value schemas(rapidjson::kArrayType);
      for (const auto& s : list->GetArray()) schemas.PushBack(schema(s), a_);
      put(out, name, std::move(schemas));
    }
    if (const Value* n = member(in, "not"); n && (n->IsObject() || n->IsBool())) put(out, "not", schema(*n));

    // Objects
    // Maps keep the first of duplicate names, as RapidJSON's FindMember does (a duplicate in
    // dependencies made it leave a validator pointer uninitialised).
    if (const Value* props = member(in, "properties"); props && props->IsObject()) {
      Value map(rapidjson::kObjectType);
      std::unordered_set<std::string_view> seen;
      for (const auto& m : props->GetObject())
        if (seen.insert(view(m.name)).second)
          map.AddMember(copy(m.name), map_entry(view(m.name), schema(m.value)), a_);
      put(out, "properties", std::move(map));
    }
    if (const Value* req = member(in, "required"); req && req->IsArray()) {
      Value names(rapidjson::kArrayType);
      for (const auto& name : req->GetArray())
        if (name.IsString()) names.PushBack(copy(name), a_);
      if (!names.Empty()) put(out, "required", std::move(names));
    }
    if (const Value* deps = member(in, "dependencies"); deps && deps->IsObject()) {
      Value map(rapidjson::kObjectType);
      std::unordered_set<std::string_view> seen;
      for (const auto& m : deps->GetObject()) {
        if (!seen.insert(view(m.name)).second) continue;
        Value entry;
        if (m.value.IsArray()) {
          entry.SetArray();
          for (const auto& name : m.value.GetArray())
            if (name.IsString()) entry.PushBack(copy(name), a_);
        } else if (m.value.IsObject() || m.value.IsBool()) {
          entry = schema(m.value);
        } else {
          continue;
        }
        map.AddMember(copy(m.name), map_entry(view(m.name), std::move(entry)), a_);
      }
      if (!map.ObjectEmpty()) put(out, "dependencies", std::move(map));
    }
    bool patterns = false;
    if (const Value* pp = member(in, "patternProperties"); pp && pp->IsObject()) {
      Value map(rapidjson::kObjectType);
      std::unordered_set<std::string> seen;
      for (const auto& m : pp->GetObject()) {
        // A pattern that cannot be checked matches no name, as in RapidJSON.
        const auto rx = regex_translator(view(m.name)).translate();
        if (!rx || !seen.insert(*rx).second) continue;
        map.AddMember(Value(rx->c_str(), static_cast<SizeType>(rx->size()), a_), map_entry(*rx, schema(m.value)), a_);
      }
      patterns = !map.ObjectEmpty();
      if (patterns) put(out, "patternProperties", std::move(map));
    }
    if (const Value* extra = member(in, "additionalProperties")) {
      if (extra->IsFalse() && patterns) {
        // RapidJSON checks a property matched only by a pattern against a stale schema when
        // additionalProperties is false; a schema refusing everything avoids that path.
        Value never = boolean_schema(false);
        put(never, unknown_key, Value(true));
        put(out, "additionalProperties", std::move(never));
      } else if (extra->IsBool()) {
        put(out, "additionalProperties", Value(extra->GetBool()));
      } else if (extra->IsObject()) {
        put(out, "additionalProperties", schema(*extra));
      }
    }
    for (const char* name : {"minProperties", "maxProperties", "minItems", "maxItems", "minLength", "maxLength"})
      if (const Value* n = member(in, name); n && n->IsUint64()) put(out, name, copy(*n));

    // Arrays
    if (const Value* items = member(in, "items")) {
      if (items->IsObject() || items->IsBool()) {
        put(out, "items", schema(*items));
      } else if (items->IsArray() && !items->Empty()) {
        Value tuple(rapidjson::kArrayType);
        for (const auto& s : items->GetArray()) tuple.PushBack(schema(s), a_);
        put(out, "items", std::move(tuple));
      }
    }
    if (const Value* extra = member(in, "additionalItems")) {
      if (extra->IsBool()) put(out, "additionalItems", Value(extra->GetBool()));
      else if (extra->IsObject()) put(out, "additionalItems", schema(*extra));
    }
    if (const Value* u = member(in, "uniqueItems"); u && u->IsBool()) put(out, "uniqueItems", Value(u->GetBool()));

    // Strings
    if (const Value* p = member(in, "pattern"); p && p->IsString()) {
      if (const auto rx = regex_translator(view(*p)).translate()) {
        put(out, "pattern", Value(rx->c_str(), static_cast<SizeType>(rx->size()), a_));
        put(out, pattern_key, copy(*p));
      }
    }

    // Numbers
    bound(in, out, "minimum", "exclusiveMinimum", true);
    bound(in, out, "maximum", "exclusiveMaximum", false);
    if (const Value* m = member(in, "multipleOf"); m && m->IsNumber() && m->GetDouble() > 0) put(out, "multipleOf", copy(*m));
    return out;
  }

  // minimum + exclusiveMinimum (draft 4: a boolean; draft 6+: a number, kept when stricter).
  void bound(const Value& in, Value& out, const char* inclusive, const char* exclusive, bool lower) {
    const Value* inc = member(in, inclusive);
    if (inc && !inc->IsNumber()) inc = nullptr;
    const Value* exc = member(in, exclusive);
    if (exc && exc->IsNumber()) {
      const bool stricter = !inc || (lower ? exc->GetDouble() >= inc->GetDouble() : exc->GetDouble() <= inc->GetDouble());
      if (stricter) {
        put(out, inclusive, copy(*exc));
        put(out, exclusive, Value(true));
      } else {
        put(out, inclusive, copy(*inc));
      }
      return;
    }
    if (inc) put(out, inclusive, copy(*inc));
    if (inc && exc && exc->IsBool()) put(out, exclusive, Value(exc->GetBool()));
  }

  const Value& root_;
  rapidjson::Document::AllocatorType& a_;
  std::unordered_map<const Value*, std::size_t> slots_;
  std::vector<Value> targets_;                                     // the x-refs table
  std::vector<std::pair<std::size_t, const Value*>> pending_;      // slots still to fill
  std::unordered_map<const Value*, std::unordered_map<std::string_view, const Value*>> indexes_;
  std::size_t made_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The normalised schema's structure (its $refs are "#" or "#/x-refs/N", to a value without one).

const Value* ref_target(const Value& root, const Value& node) {
  const Value* ref = member(node, "$ref");
  if (!ref || !ref->IsString()) return nullptr;
  const auto text = view(*ref);
  if (text == "#") return &root;
  const std::string prefix = fmt::format("#/{}/", refs_key);
  const Value* table = member(root, refs_key);
  if (!table || text.substr(0, prefix.size()) != prefix) return nullptr;
  const auto index = std::strtoul(std::string(text.substr(prefix.size())).c_str(), nullptr, 10);
  return index < table->Size() ? &(*table)[static_cast<SizeType>(index)] : nullptr;
}

const Value& deref(const Value& root, const Value& node) {
  const Value* target = ref_target(root, node);
  return target ? *target : node;
}

// Subschemas that RapidJSON applies to the same value (follow_refs: including a $ref's target).
template <typename F>
void for_each_same_value(const Value& root, const Value& node, bool follow_refs, F&& f) {
  for (const char* name : {"allOf", "anyOf", "oneOf"})
    if (const Value* list = member(node, name))
      for (const auto& s : list->GetArray()) f(s);
  if (const Value* n = member(node, "not")) f(*n);
  if (const Value* deps = member(node, "dependencies"))
    for (const auto& m : deps->GetObject())
      if (m.value.IsObject()) f(m.value);
  if (follow_refs)
    if (const Value* target = ref_target(root, node)) f(*target);
}

// Subschemas that RapidJSON applies to members or items of the value.
template <typename F>
void for_each_nested_value(const Value& node, F&& f) {
  for (const char* name : {"properties", "patternProperties"})
    if (const Value* map = member(node, name))
      for (const auto& m : map->GetObject()) f(m.value);
  for (const char* name : {"additionalProperties", "additionalItems"})
    if (const Value* s = member(node, name); s && s->IsObject()) f(*s);
  if (const Value* items = member(node, "items")) {
    if (items->IsObject()) f(*items);
    else
      for (const auto& s : items->GetArray()) f(s);
  }
}

// RapidJSON starts a validator for every allOf/anyOf/oneOf/not/dependencies subschema when a
// value starts, and those start theirs: a loop there never ends, and a long chain overflows
// the stack. Both are refused.
class combination_check {
public:
  explicit combination_check(const Value& root) : root_(root) {}

  void run() {
    visit(root_);
    if (const Value* table = member(root_, refs_key))
      for (const auto& entry : table->GetArray()) visit(entry);
  }

private:
  // Every subschema once (the normalised schema is a tree; $ref targets are the root or
  // table entries); recursion is bounded by its depth.
  void visit(const Value& node) {
    chain(node, 0);
    for_each_same_value(root_, node, false, [this](const Value& s) { visit(s); });
    for_each_nested_value(node, [this](const Value& s) { visit(s); });
  }

  // The longest run of same-value subschemas from `node`.
  int chain(const Value& node, int depth) {
    if (depth > max_combination_depth) throw too_deep();
    if (const auto it = longest_.find(&node); it != longest_.end()) {
      if (it->second < 0)
        throw schema_error{"the schema refers to itself (through $ref, allOf, anyOf, oneOf or not) "
                           "without descending into the arguments"};
      return it->second;
    }
    longest_[&node] = -1;
    int longest = 0;
    for_each_same_value(root_, node, true,
                        [&](const Value& s) { longest = std::max(longest, 1 + chain(s, depth + 1)); });
    if (longest > max_combination_depth) throw too_deep();
    longest_[&node] = longest;
    return longest;
  }

  static schema_error too_deep() {
    return schema_error{fmt::format(
        "the schema nests $ref, allOf, anyOf, oneOf or not more than {} levels deep on one value",
        max_combination_depth)};
  }

  const Value& root_;
  std::unordered_map<const Value*, int> longest_;
};

// ---------------------------------------------------------------------------------------------
// check(): RapidJSON's validator on an allocator that refuses past a budget. allOf/anyOf/oneOf
// over deep arguments can start exponentially many validators; when the budget runs out the
// allocator throws, the half-built validators are abandoned (none of them is destroyed), and
// every block is freed from the list below: all their memory comes from here.

struct budget_exceeded {};

struct budget {
  struct alignas(std::max_align_t) block {
    block* prev;
    block* next;
    std::size_t size;
  };

  block* head = nullptr;
  std::size_t live = 0, allocations = 0;

  void link(block* b) {
    b->prev = nullptr;
    b->next = head;
    if (head) head->prev = b;
    head = b;
  }
  void unlink(block* b) {
    (b->prev ? b->prev->next : head) = b->next;
    if (b->next) b->next->prev = b->prev;
  }
  void release_all() {
    while (head) {
      block* b = head;
      head = b->next;
      std::free(b);
    }
    live = 0;
  }
  ~budget() { release_all(); }
};

thread_local budget* current_budget = nullptr;

class budget_allocator {
public:
  static const bool kNeedFree = true;

  void* Malloc(std::size_t size) {
    if (size == 0) return nullptr;
    budget& b = *current_budget;
    charge(b, size);
    auto* raw = static_cast<budget::block*>(std::malloc(sizeof(budget::block) + size));
    if (!raw) throw budget_exceeded{};
    raw->size = size;
    b.live += size;
    b.link(raw);
    return raw + 1;
  }

  void* Realloc(void* original, std::size_t, std::size_t size) {
    if (!original) return Malloc(size);
    if (size == 0) {
      Free(original);
      return nullptr;
    }
    budget& b = *current_budget;
    auto* old = static_cast<budget::block*>(original) - 1;
    if (size > old->size) charge(b, size - old->size);
    b.unlink(old);
    auto* raw = static_cast<budget::block*>(std::realloc(old, sizeof(budget::block) + size));
    if (!raw) {
      b.link(old);
      throw budget_exceeded{};
    }
    b.live = b.live - raw->size + size;
    raw->size = size;
    b.link(raw);
    return raw + 1;
  }

  static void Free(void* p) {
    if (!p) return;
    budget& b = *current_budget;
    auto* block = static_cast<budget::block*>(p) - 1;
    b.live -= block->size;
    b.unlink(block);
    std::free(block);
  }

private:
  static void charge(budget& b, std::size_t more) {
    if (++b.allocations > max_check_allocations || b.live + more > max_check_bytes) throw budget_exceeded{};
  }
};

using validator = rapidjson::GenericSchemaValidator<rapidjson::SchemaDocument,
                                                    rapidjson::BaseReaderHandler<rapidjson::UTF8<>>, budget_allocator>;
using pointer = rapidjson::SchemaDocument::PointerType;

struct failure {
  std::string keyword;
  pointer schema, value;
};

// ---------------------------------------------------------------------------------------------
// Messages.

std::string_view type_name(const Value* v) {
  if (!v) return "nothing";
  if (v->IsNull()) return "null";
  if (v->IsBool()) return "boolean";
  if (v->IsObject()) return "object";
  if (v->IsArray()) return "array";
  if (v->IsString()) return "string";
  if (v->IsInt64() || v->IsUint64()) return "integer";
  return "number";
}

bool admits(const Value& types, std::string_view actual) {
  const auto one = [&](const Value& t) {
    return t.IsString() && (view(t) == actual || (view(t) == "number" && actual == "integer"));
  };
  if (types.IsString()) return one(types);
  return types.IsArray() && std::any_of(types.Begin(), types.End(), one);
}

void add_types(std::vector<std::string>& out, const Value& types) {
  const auto add = [&](const Value& t) {
    if (t.IsString() && std::find(out.begin(), out.end(), view(t)) == out.end()) out.emplace_back(view(t));
  };
  if (types.IsString()) add(types);
  if (types.IsArray())
    for (const auto& t : types.GetArray()) add(t);
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : std::string(separator)) + p;
  return out;
}

std::string plural(const Value& n, std::string_view noun) {
  return fmt::format("{} {}{}", json::to_string(n), noun, n.IsUint64() && n.GetUint64() == 1 ? "" : "s");
}

std::string describe(const Value& root, const Value& arguments, const failure& f) {
  // "/tags/1" -> "tags[1]", following the arguments to tell indexes from names.
  const Value* at = &arguments;
  std::string path;
  for (std::size_t i = 0; i < f.value.GetTokenCount(); ++i) {
    const auto& token = f.value.GetTokens()[i];
    const std::string_view name(token.name, token.length);
    if (at && at->IsArray()) {
      path += fmt::format("[{}]", name);
      at = token.index < at->Size() ? &(*at)[token.index] : nullptr;
    } else {
      path += (path.empty() ? "" : ".") + std::string(name);
      const Value* next = nullptr;
      if (at && at->IsObject()) {
        const auto it = at->FindMember(Value(rapidjson::StringRef(token.name, token.length)));
        if (it != at->MemberEnd()) next = &it->value;
      }
      at = next;
    }
  }
  if (path.empty() || path[0] == '[') path = "arguments" + path;
  const std::string prefix = path == "arguments" ? "" : path + ".";

  static const Value empty(rapidjson::kObjectType);
  const Value* found = f.schema.Get(root);
  const Value& node = found ? deref(root, *found) : empty;
  const auto& kw = f.keyword;
  const Value* rule = member(node, kw.c_str());
  const auto generic = [&] { return fmt::format("{}: fails the schema's '{}' rule", path, kw); };

  if (kw == "type" && rule) {
    std::vector<std::string> expected;
    add_types(expected, *rule);
    return fmt::format("{}: expected {}, got {}", path, join(expected, " or "), type_name(at));
  }
  if (kw == "enum" && rule && rule->IsArray()) {
    std::vector<std::string> values;
    for (const auto& v : rule->GetArray()) {
      if (values.size() == max_enum_listed) {
        values.emplace_back("...");
        break;
      }
      values.push_back(json::to_string(v));
    }
    return values.size() == 1 ? fmt::format("{}: must be {}", path, values.front())
                              : fmt::format("{}: must be one of {}", path, join(values, ", "));
  }
  if ((kw == "minimum" || kw == "maximum") && rule) {
    const Value* exclusive = member(node, kw == "minimum" ? "exclusiveMinimum" : "exclusiveMaximum");
    const bool strict = exclusive && exclusive->IsTrue();
    const char* relation = kw == "minimum" ? (strict ? "more than" : "at least") : (strict ? "less than" : "at most");
    return fmt::format("{}: must be {} {}", path, relation, json::to_string(*rule));
  }
  if (kw == "multipleOf" && rule) return fmt::format("{}: must be a multiple of {}", path, json::to_string(*rule));
  if (kw == "minLength" && rule) return fmt::format("{}: must be at least {}", path, plural(*rule, "character"));
  if (kw == "maxLength" && rule) return fmt::format("{}: must be at most {}", path, plural(*rule, "character"));
  if (kw == "pattern") {
    const Value* original = member(node, pattern_key);
    if (original && original->IsString())
      return fmt::format("{}: does not match the pattern {}", path, json::quoted(view(*original)));
  }
  if (kw == "minItems" && rule) return fmt::format("{}: at least {}", path, plural(*rule, "item"));
  if (kw == "maxItems" && rule) return fmt::format("{}: at most {}", path, plural(*rule, "item"));
  if (kw == "uniqueItems") return fmt::format("{}: repeats an earlier item", path);  // the path names the repeat
  if (kw == "items" && rule && rule->IsArray())  // a tuple with additionalItems false
    return fmt::format("{}: unexpected item (the list takes at most {})", path,
                       plural(Value(rule->Size()), "item"));
  if (kw == "minProperties" && rule) return fmt::format("{}: at least {}", path, plural(*rule, "property"));
  if (kw == "maxProperties" && rule) return fmt::format("{}: at most {}", path, plural(*rule, "property"));
  if (kw == "additionalProperties" || (kw == "not" && member(node, unknown_key)))
    return fmt::format("{}: unknown argument", path);  // the path ends with the property
  if (kw == "not" && rule && rule->IsObject() && rule->ObjectEmpty()) return fmt::format("{}: is not allowed", path);
  if (kw == "required" && rule && at && at->IsObject()) {
    std::vector<std::string> missing;
    for (const auto& name : rule->GetArray())
      if (!at->HasMember(name)) missing.push_back(prefix + std::string(view(name)));
    if (missing.size() == 1) return missing.front() + ": missing required argument";
    if (!missing.empty()) return join(missing, ", ") + ": missing required arguments";
  }
  if (kw == "dependencies" && rule && at && at->IsObject()) {
    for (const auto& m : rule->GetObject()) {
      if (!at->HasMember(m.name) || !m.value.IsArray()) continue;
      for (const auto& name : m.value.GetArray())
        if (!at->HasMember(name))
          return fmt::format("{}{}: missing required argument (needed with {}{})", prefix, view(name), prefix,
                             view(m.name));
    }
  }
  if ((kw == "anyOf" || kw == "oneOf") && rule) {
    // When no alternative takes this type of value, say which types they take.
    std::vector<std::string> types;
    bool typed = true, any_admits = false;
    for (const auto& alternative : rule->GetArray()) {
      const Value* t = member(deref(root, alternative), "type");
      if (!t) {
        typed = false;
        break;
      }
      add_types(types, *t);
      any_admits = any_admits || admits(*t, type_name(at));
    }
    if (typed && !any_admits) return fmt::format("{}: expected {}, got {}", path, join(types, " or "), type_name(at));
    if (kw == "anyOf") return fmt::format("{}: matches none of the schema's 'anyOf' alternatives", path);
    return fmt::format("{}: must match exactly one of the schema's 'oneOf' alternatives", path);
  }
  return generic();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct compiled_schema::state {
  rapidjson::Document doc;  // the normalised schema; never moved once `compiled` exists
  std::optional<rapidjson::SchemaDocument> compiled;
};

std::variant<compiled_schema, std::string> compiled_schema::compile(std::string_view schema_json) {
  if (json::nesting_depth(schema_json) > max_depth)
    return fmt::format("the schema is nested deeper than {} levels", max_depth);
  rapidjson::Document doc;
  doc.Parse(schema_json.data(), schema_json.size());
  if (doc.HasParseError())
    return fmt::format("the schema is not JSON (offset {}: {})", doc.GetErrorOffset(),
                       rapidjson::GetParseError_En(doc.GetParseError()));
  return compile(static_cast<const Value&>(doc));
}

std::variant<compiled_schema, std::string> compiled_schema::compile(const rapidjson::Value& schema) {
  if (!schema.IsObject()) return std::string("the schema is not a JSON object");
  const auto given = measure(schema, max_depth);
  if (given.depth > max_depth) return fmt::format("the schema is nested deeper than {} levels", max_depth);
  if (given.values > max_schema_values) return fmt::format("the schema has more than {} values", max_schema_values);
  auto s = std::make_shared<state>();
  try {
    Value normalised = builder(schema, s->doc.GetAllocator()).build();
    static_cast<Value&>(s->doc) = normalised;  // moves
    const auto built = measure(s->doc, ~0u);
    if (built.objects > max_compiled_objects)
      return fmt::format("the schema has more than {} objects", max_compiled_objects);
    combination_check(s->doc).run();
  } catch (const schema_error& e) {
    return e.message;
  }
  s->compiled.emplace(s->doc);
  return compiled_schema(std::move(s));
}

std::optional<std::string> compiled_schema::check(const rapidjson::Value& value) const {
  if (measure(value, max_depth).depth > max_depth)
    return fmt::format("arguments: nested deeper than {} levels", max_depth);
  failure f;
  {
    budget b;
    budget* const outer = current_budget;
    current_budget = &b;
    struct restore {
      budget* outer;
      ~restore() { current_budget = outer; }
    } restore_on_exit{outer};
    budget_allocator allocator;
    try {
      auto* v = new (allocator.Malloc(sizeof(validator))) validator(*state_->compiled, &allocator);
      const bool ok = value.Accept(*v);
      if (!ok) {
        const char* keyword = v->GetInvalidSchemaKeyword();
        f.keyword = keyword ? keyword : "";
        f.schema = v->GetInvalidSchemaPointer();
        f.value = v->GetInvalidDocumentPointer();
      }
      v->~validator();
      budget_allocator::Free(v);
      if (ok) return std::nullopt;
    } catch (const budget_exceeded&) {
      b.release_all();  // the abandoned validators' memory, all of it
      return std::string("arguments: too costly to check against the tool's schema");
    }
  }
  return describe(state_->doc, value, f);
}

std::optional<std::string> validate(const rapidjson::Value& schema, const rapidjson::Value& value) {
  auto compiled = compiled_schema::compile(schema);
  if (const auto* error = std::get_if<std::string>(&compiled)) return "the tool's parameter schema is unusable: " + *error;
  return std::get<compiled_schema>(compiled).check(value);
}

}  // namespace stargazer::tools
