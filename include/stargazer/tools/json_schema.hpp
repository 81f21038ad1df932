#pragma once
// Tool parameter schemas, checked with RapidJSON's JSON-Schema validator (rapidjson/schema.h,
// draft 4 as RapidJSON 1.1 implements it). Schemas may come from MCP servers and use any
// keyword: the ones RapidJSON does not know are ignored, so they never refuse arguments.
// Arguments from the model are checked before a tool runs, so handlers see well-typed input.
//
// compile() does not hand the schema to RapidJSON as it is: RapidJSON 1.1 crashes or loops on
// several valid or slightly broken schemas, so compile() builds a normalised copy first.
//   - Keywords RapidJSON checks: type, enum, allOf, anyOf, oneOf, not, properties, required,
//     additionalProperties, patternProperties, dependencies, min/maxProperties, items,
//     additionalItems, min/maxItems, uniqueItems, min/maxLength, pattern, minimum, maximum,
//     exclusiveMinimum/Maximum (draft-4 booleans), multipleOf, and local $ref.
//   - Translated from later drafts: `true`/`false` as schemas; `const` (as a one-value enum);
//     numeric exclusiveMinimum/exclusiveMaximum (draft 6+; RapidJSON 1.1 alone ignores them).
//   - Ignored (never refuse anything): format, if/then/else, prefixItems, contains,
//     propertyNames, dependentRequired/dependentSchemas, unevaluated*, $schema, $id, title,
//     description, default, examples, and keywords with a value of the wrong type.
//   - $ref: local refs ("#", "#/definitions/x", "#/$defs/x", any JSON pointer, %-escapes) are
//     resolved here (RapidJSON 1.1 itself ignores "#/$defs/x": it refuses '$' unescaped in a
//     URI fragment). Siblings of a $ref are ignored (draft 4 to 7). Remote refs are never
//     fetched: the $ref is ignored and its siblings apply. A ref to nothing checks nothing.
//     A $ref chain that loops, or allOf/anyOf/oneOf/not/$ref that reach the same value again
//     without descending into it (RapidJSON would recurse forever), is refused.
//   - pattern / patternProperties: ECMA-262 regexes are translated to RapidJSON's own engine
//     (a Thompson NFA: no backtracking blow-up). \d \w \s (and \D \W \S outside classes),
//     \xHH, \uHHHH, (?:...), lazy quantifiers and identity escapes are supported; a pattern
//     with anything else (lookaround, backreferences, \b, ...), or whose matching would cost
//     more than about 2000 steps per character (large counted repetitions), is ignored, as
//     RapidJSON ignores a pattern it cannot compile. Code points, not UTF-16
//     units, are matched (like ajv's "u" flag). A string containing U+0000 is only matched up
//     to it (RapidJSON's engine reads C strings).
//   - Numbers: "integer" means a JSON number written without fraction or exponent (draft 4):
//     1.0 and 1e3 are numbers, not integers, so handlers can call GetInt64() on what passes.
//     Integers beyond int64 (up to uint64) are exact; larger ones and doubles compare as doubles.
//   - minLength/maxLength count code points.
// Limits: schemas nested deeper than 64 levels or with more than 100000 values are refused
// before anything recurses; at most 2048 objects after normalising (RapidJSON compiles in
// quadratic time); a check that would need more than 32 MiB of validator state (allOf/anyOf
// fanning out over deep arguments) is refused rather than run.

#include <rapidjson/document.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace stargazer::tools {

// A tool's parameter schema, compiled once. Copies share the compiled form and are cheap.
// check() is not safe to call on copies from several threads at once: RapidJSON's regex
// engine keeps scratch state in the compiled pattern (one io_context thread is fine).
class compiled_schema {
public:
  // The error names the problem: "the schema is not JSON (offset 3: ...)", "the schema is not
  // a JSON object", "the schema is nested deeper than 64 levels", "... $ref ... loops", ...
  static std::variant<compiled_schema, std::string> compile(std::string_view schema_json);
  static std::variant<compiled_schema, std::string> compile(const rapidjson::Value& schema);

  // nullopt when `value` satisfies the schema; else one line naming the argument and the
  // rule, e.g. "a: expected integer, got string", "tags[1]: must be at most 3 characters",
  // "outer.inner: missing required argument", "b: unknown argument".
  std::optional<std::string> check(const rapidjson::Value& value) const;

private:
  struct state;
  explicit compiled_schema(std::shared_ptr<const state> s) : state_(std::move(s)) {}
  std::shared_ptr<const state> state_;
};

// compile(schema) then check(value), for callers that hold the schema as a value; a schema
// that does not compile refuses every value ("the tool's parameter schema is unusable: ...").
std::optional<std::string> validate(const rapidjson::Value& schema, const rapidjson::Value& value);

}  // namespace stargazer::tools
