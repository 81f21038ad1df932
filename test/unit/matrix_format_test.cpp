// Matrix's pure pieces: Markdown to safe HTML, splitting long replies, and the JSON of the
// event contents and request bodies the adapter sends.

#include "stargazer/platform/matrix/message_format.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <random>
#include <string>
#include <vector>

using namespace stargazer::platform::matrix;

namespace {

rapidjson::Document parsed(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  INFO(json.substr(0, 200));
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc.IsObject());
  return doc;
}

std::string str(const rapidjson::Value& object, const char* key) {
  INFO(key);
  REQUIRE(object.IsObject());
  const auto it = object.FindMember(key);
  REQUIRE(it != object.MemberEnd());
  REQUIRE(it->value.IsString());
  return {it->value.GetString(), it->value.GetStringLength()};
}

bool has(const rapidjson::Value& object, const char* key) {
  return object.HasMember(key);
}

std::vector<std::string> user_ids(const rapidjson::Value& content) {
  REQUIRE(has(content, "m.mentions"));
  const auto& mentions = content["m.mentions"];
  REQUIRE(mentions.IsObject());
  REQUIRE(mentions.HasMember("user_ids"));
  REQUIRE(mentions["user_ids"].IsArray());
  CHECK_FALSE(mentions.HasMember("room"));
  std::vector<std::string> out;
  for (const auto& id : mentions["user_ids"].GetArray()) {
    REQUIRE(id.IsString());
    out.emplace_back(id.GetString(), id.GetStringLength());
  }
  return out;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b < 0x80             ? 1
                    : (b & 0xE0) == 0xC0 ? 2
                    : (b & 0xF0) == 0xE0 ? 3
                    : (b & 0xF8) == 0xF0 ? 4
                                         : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

bool is_fence_line(std::string_view line) {
  const auto at = line.find_first_not_of(" \t");
  return at != std::string_view::npos &&
         (line.substr(at).starts_with("```") || line.substr(at).starts_with("~~~"));
}

// The text without fence lines and whitespace, so parts can be compared with the original.
std::string content_of(std::string_view s) {
  std::string out;
  while (!s.empty()) {
    const auto nl = s.find('\n');
    const auto line = s.substr(0, nl);
    if (!is_fence_line(line))
      for (char c : line)
        if (c != ' ' && c != '\t' && c != '\r') out.push_back(c);
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return out;
}

std::size_t fence_lines(std::string_view s) {
  std::size_t n = 0;
  while (!s.empty()) {
    const auto nl = s.find('\n');
    if (is_fence_line(s.substr(0, nl))) ++n;
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return n;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += p + "\n";
  return out;
}

}  // namespace

// ---- Markdown ----

TEST_CASE("raw HTML reaches the reader as text, never as markup", "[matrix]") {
  const auto script = markdown_to_html("<script>alert(1)</script>");
  CHECK(script == "&lt;script&gt;alert(1)&lt;/script&gt;");
  const auto inline_html = markdown_to_html("hi <b>bold</b> <img src=x onerror=\"alert(1)\"> there");
  CHECK(inline_html == "hi &lt;b&gt;bold&lt;/b&gt; &lt;img src=x onerror=&quot;alert(1)&quot;&gt; there");
  const auto block = markdown_to_html("<div onclick=\"x()\">\n*not emphasis*\n</div>");
  CHECK(block == "&lt;div onclick=&quot;x()&quot;&gt;<br />\n*not emphasis*<br />\n&lt;/div&gt;");
  CHECK(markdown_to_html("x <!-- hidden --> y") == "x &lt;!-- hidden --&gt; y");
  // Shown as text, as the plain body shows it: nothing for formatted_body to add.
  const auto f = format_markdown("<script>alert(1)</script>");
  CHECK(f.body == "<script>alert(1)</script>");
  CHECK_FALSE(f.formatted_body);
}

TEST_CASE("links keep only the schemes clients may render", "[matrix]") {
  for (const char* bad : {"[x](javascript:alert(1))", "[x](JavaScript:alert(1))", "[x](vbscript:msgbox)",
                          "[x](data:text/html;base64,PHNjcmlwdD4=)", "[x](/relative/path)",
                          "[x](file:///etc/passwd)", "[x](<javascript:alert(1)>)"}) {
    INFO(bad);
    const auto html = markdown_to_html(bad);
    CHECK(html == "x");
    CHECK(has_formatting(bad));  // the link's text alone, not the Markdown
  }
  CHECK(markdown_to_html("![i](javascript:alert(1))") == "i");
  CHECK(markdown_to_html("[site](https://example.org/a?b=1&c=\"2\" \"a title\")") ==
        "<a href=\"https://example.org/a?b=1&amp;c=%222%22\">site</a>");
  CHECK(markdown_to_html("[Alice](https://matrix.to/#/@alice:example.org)") ==
        "<a href=\"https://matrix.to/#/@alice:example.org\">Alice</a>");
  CHECK(markdown_to_html("<https://example.org>") ==
        "<a href=\"https://example.org\">https://example.org</a>");
  CHECK(markdown_to_html("[mail](MAILTO:a@example.org)") == "<a href=\"MAILTO:a@example.org\">mail</a>");
  // Images: mxc:// stays an image; elsewhere a link to it; inside a link just the alt text.
  CHECK(markdown_to_html("![cat](mxc://example.org/abc)") ==
        "<img src=\"mxc://example.org/abc\" alt=\"cat\" />");
  CHECK(markdown_to_html("![cat](https://example.org/cat.png)") ==
        "<a href=\"https://example.org/cat.png\">cat</a>");
  CHECK(markdown_to_html("[![cat](https://e.org/c.png)](https://e.org/)") ==
        "<a href=\"https://e.org/\">cat</a>");
  CHECK(markdown_to_html("[![cat](https://e.org/c.png)](javascript:x)") ==
        "<a href=\"https://e.org/c.png\">cat</a>");
}

TEST_CASE("text is escaped: angle brackets, ampersands, quotes, unicode", "[matrix]") {
  CHECK(markdown_to_html("a < b & c") == "a &lt; b &amp; c");
  CHECK_FALSE(format_markdown("a < b & c").formatted_body);
  CHECK(markdown_to_html("say \"hi\" & 'bye'") == "say &quot;hi&quot; &amp; 'bye'");
  CHECK_FALSE(has_formatting("say \"hi\" & 'bye'"));
  CHECK(markdown_to_html("café 😀 — ünïcödé 中文") == "café 😀 — ünïcödé 中文");
  CHECK_FALSE(has_formatting("café 😀 — ünïcödé 中文"));
  CHECK(markdown_to_html("**café** 😀") == "<strong>café</strong> 😀");
  // Invalid UTF-8 becomes U+FFFD in body and HTML alike.
  const auto f = format_markdown("*a*\xff b");
  CHECK(f.body == "*a*\xEF\xBF\xBD b");
  CHECK(f.formatted_body == "<em>a</em>\xEF\xBF\xBD b");
  // Escapes and entities the HTML would resolve count as formatting.
  CHECK(has_formatting("AT&amp;T"));
  CHECK(has_formatting("1\\. not a list"));
  CHECK_FALSE(has_formatting("C:\\Users\\me"));  // a backslash before a letter is text
}

TEST_CASE("plain text gets no formatted_body", "[matrix]") {
  for (const char* plain : {"hello", "hello\nworld", "first paragraph\n\nsecond", "2 * 3 * 4 = 24",
                            "https://example.org/a_b_c", "trailing two spaces  \nbreak", ""}) {
    INFO(plain);
    const auto f = format_markdown(plain);
    CHECK(f.body == plain);
    CHECK_FALSE(f.formatted_body);
  }
  CHECK(markdown_to_html("hello\nworld") == "hello<br />\nworld");  // newlines are line breaks
  CHECK(markdown_to_html("a\n\nb") == "<p>a</p>\n<p>b</p>");
  CHECK(markdown_to_html("") == "");
}

TEST_CASE("formatting becomes HTML: emphasis, code, lists, headings, quotes", "[matrix]") {
  CHECK(format_markdown("*em* and `x<y>`").formatted_body == "<em>em</em> and <code>x&lt;y&gt;</code>");
  CHECK(format_markdown("```cpp\nint a = b < c && d;\n```").formatted_body ==
        "<pre><code class=\"language-cpp\">int a = b &lt; c &amp;&amp; d;\n</code></pre>");
  CHECK(format_markdown("```\n<script>alert(1)</script>\n```").formatted_body ==
        "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;\n</code></pre>");
  CHECK(format_markdown("1. one\n2. two").formatted_body == "<ol>\n<li>one</li>\n<li>two</li>\n</ol>");
  CHECK(format_markdown("# Title\n\ntext").formatted_body == "<h1>Title</h1>\n<p>text</p>");
  CHECK(format_markdown("> quoted").formatted_body == "<blockquote>\n<p>quoted</p>\n</blockquote>");
}

TEST_CASE("HTML nested deeper than the spec allows is not sent", "[matrix]") {
  CHECK(format_markdown(std::string(50, '>') + " deep").formatted_body);
  CHECK_FALSE(format_markdown(std::string(150, '>') + " deep").formatted_body);
  CHECK_FALSE(format_markdown(std::string(5000, '>') + " deep").formatted_body);
}

// ---- Splitting ----

TEST_CASE("a short reply is one part, unchanged", "[matrix]") {
  CHECK(split_message("hello there") == std::vector<std::string>{"hello there"});
  CHECK(split_message("").empty());
  CHECK(split_message("\n\n  \n").empty());
  const std::string exact(max_body_bytes, 'a');
  CHECK(split_message(exact) == std::vector<std::string>{exact});
  CHECK(split_message(exact + "a").size() == 2);
}

TEST_CASE("long replies split at paragraphs, then lines, then words", "[matrix]") {
  const std::string paragraph(1500, 'x');
  CHECK(split_message(paragraph + "\n\n" + paragraph + "\n\n" + paragraph, 2000) ==
        std::vector<std::string>{paragraph, paragraph, paragraph});
  // Two paragraphs fit together: the cut is at the blank line, not at the later line break.
  const std::string line(600, 'y');
  const auto p = split_message(line + "\n\n" + line + "\n" + line + "\n" + line, 2000);
  REQUIRE(p.size() == 2);
  CHECK(p[0] == line);
  CHECK(p[1] == line + "\n" + line + "\n" + line);
  // Lines only.
  std::string lines;
  for (int i = 0; i < 100; ++i) lines += std::string(50, 'a' + i % 26) + "\n";
  const auto l = split_message(lines, 1000);
  CHECK(l.size() == 6);
  for (std::size_t i = 0; i < l.size(); ++i) {
    CHECK(l[i].size() <= 1000);
    if (i + 1 < l.size()) CHECK(l[i].size() >= 750);  // whole lines of 51 bytes, cut in the last quarter
    CHECK(l[i].size() % 51 == 50);
    for (std::size_t at = 0; at < l[i].size(); at += 51) CHECK(l[i][at] == l[i][at + 49]);
  }
  // Words only: no word is cut.
  std::string words;
  for (int i = 0; i < 1000; ++i) words += "word ";
  const auto w = split_message(words, 1000);
  CHECK(w.size() == 5);
  for (const auto& part : w) {
    CHECK(part.size() <= 1000);
    CHECK(part.front() == 'w');
    CHECK(part.ends_with("word"));
  }
}

TEST_CASE("a split never cuts a UTF-8 character", "[matrix]") {
  for (const char* ch : {"é", "中", "😀"}) {
    std::string text;
    for (int i = 0; i < 2000; ++i) text += ch;
    const auto parts = split_message(text, 1000);
    std::string joined;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      CHECK(parts[i].size() <= 1000);
      if (i + 1 < parts.size()) CHECK(parts[i].size() > 996);
      CHECK(valid_utf8(parts[i]));
      joined += parts[i];
    }
    CHECK(joined == text);
  }
  // Invalid input comes out valid.
  for (const auto& part : split_message(std::string(3000, '\x80') + "ok", 1000)) CHECK(valid_utf8(part));
}

TEST_CASE("a code block that fits in a part is not split", "[matrix]") {
  std::string code = "```python\n";
  for (int i = 0; i < 40; ++i) code += "print('line " + std::to_string(i) + "')\n";
  code += "```";
  REQUIRE(code.size() > 600);
  REQUIRE(code.size() < 780);
  const std::string intro =
      "Here is the script. It prints forty lines and then stops; run it with Python 3 and compare "
      "the output with what you expected.\n";
  // Intro and code do not fit in 800 bytes; the code alone is over three quarters of it.
  const auto parts = split_message(intro + "\n" + code + "\n\nThat is all.", 800);
  REQUIRE(parts.size() == 2);
  CHECK(parts[0] == intro.substr(0, intro.size() - 1));
  CHECK(parts[1] == code + "\n\nThat is all.");
}

TEST_CASE("a code block that must be split is closed and reopened with its language", "[matrix]") {
  std::string code = "```python\n";
  for (int i = 0; i < 200; ++i) code += "x_" + std::to_string(i) + " = compute(" + std::to_string(i) + ")\n";
  code += "```";
  const std::string text = "Intro.\n\n" + code + "\n\nOutro.";
  const auto parts = split_message(text, 1024);
  REQUIRE(parts.size() > 3);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    INFO(i << ": " << parts[i]);
    CHECK(parts[i].size() <= 1024);
    CHECK(fence_lines(parts[i]) % 2 == 0);  // every block it opens it closes
    if (i > 0 && i + 1 < parts.size()) CHECK(parts[i].starts_with("```python\n"));
    if (i + 1 < parts.size()) CHECK(parts[i].ends_with("\n```"));
    // Whole lines of code: each ends at a newline before the closing fence.
    CHECK(parts[i].find("compute(") != std::string::npos);
  }
  CHECK(content_of(join(parts)) == content_of(text));
  // Tilde fences and longer fences close with their own kind.
  std::string tilde = "~~~~\n";
  for (int i = 0; i < 100; ++i) tilde += "line " + std::to_string(i) + "\n";
  const auto t = split_message(tilde + "~~~~", 400);
  REQUIRE(t.size() > 1);
  for (std::size_t i = 0; i + 1 < t.size(); ++i) CHECK(t[i].ends_with("\n~~~~"));
  for (std::size_t i = 1; i < t.size(); ++i) CHECK(t[i].starts_with("~~~~\n"));
}

TEST_CASE("a 200 KiB reply splits into valid, bounded parts that keep all the text", "[matrix]") {
  std::string text;
  std::mt19937 rng(42);
  int n = 0;
  while (text.size() < 200 * 1024) {
    switch (rng() % 4) {
      case 0:
        text += "A paragraph about café, 中文 and emoji 😀 with **bold**, `code` and <tags> & \"quotes\". ";
        text += "It goes on for a while so that lines are long enough to matter.\n\n";
        break;
      case 1: {
        text += "```cpp\n";
        const int lines = 20 + static_cast<int>(rng() % 800);
        for (int i = 0; i < lines; ++i)
          text += "  auto v" + std::to_string(n++) + " = f(a < b && c > d, \"s\");\n";
        text += "```\n\n";
        break;
      }
      case 2:
        text += "- item one\n- item two with a [link](https://example.org/" + std::to_string(n++) + ")\n\n";
        break;
      default:
        text += std::string(3000 + rng() % 3000, 'z') + "\n";
    }
  }
  const auto parts = split_message(text);
  CHECK(parts.size() >= 7);
  for (const auto& part : parts) {
    CHECK(part.size() <= max_body_bytes);
    CHECK(valid_utf8(part));
    CHECK(fence_lines(part) % 2 == 0);
  }
  CHECK(content_of(join(parts)) == content_of(text));

  // As contents: each under the event budget, parseable, the first one answering.
  const reply_target reply{"$question:example.org", ""};
  const auto contents = text_contents(text, &reply, {"@alice:example.org"});
  CHECK(contents.size() == parts.size());
  for (std::size_t i = 0; i < contents.size(); ++i) {
    CHECK(contents[i].size() <= max_content_bytes);
    const auto doc = parsed(contents[i]);
    CHECK(str(doc, "msgtype") == "m.text");
    CHECK(str(doc, "body") == parts[i]);
    if (has(doc, "formatted_body")) {
      CHECK(str(doc, "format") == "org.matrix.custom.html");
      CHECK(str(doc, "formatted_body").size() <= max_body_bytes);
    }
    CHECK(has(doc, "m.relates_to") == (i == 0));
    CHECK(user_ids(doc) ==
          (i == 0 ? std::vector<std::string>{"@alice:example.org"} : std::vector<std::string>{}));
  }
}

TEST_CASE("random texts split within bounds without losing text", "[matrix]") {
  std::mt19937 rng(7);
  // No fence gets a language: a reopened fence would add it and the comparison below could
  // not tell it from text.
  const char* pieces[] = {
      "word", " ", " ",    "\n", "\n\n",    "```\n", "\n```\n", "~~~\n",
      "é",    "😀", "中文", "x",  "  ```\n", "\t",    "`x`",     "longerwordwithoutspaces"};
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const auto length = rng() % 6000;
    while (text.size() < length) text += pieces[rng() % std::size(pieces)];
    const std::size_t max = 256 + rng() % 1500;
    INFO("round " << round << " max " << max);
    const auto parts = split_message(text, max);
    std::string all;
    for (const auto& part : parts) {
      CHECK_FALSE(part.empty());
      CHECK(part.size() <= max);
      CHECK(valid_utf8(part));
      all += part;
    }
    // Only whitespace and fences are added or dropped.
    const auto strip = [](std::string_view s) {
      std::string out;
      for (char c : s)
        if (c != ' ' && c != '\n' && c != '\t' && c != '`' && c != '~') out.push_back(c);
      return out;
    };
    CHECK(strip(all) == strip(text));
  }
}

TEST_CASE("a part whose HTML is too large is sent without formatted_body", "[matrix]") {
  std::string bold;
  while (bold.size() < 30000) bold += "**a** ";
  const auto big_html = parsed(text_content(bold, nullptr, {}));
  CHECK(str(big_html, "body") == bold);
  CHECK_FALSE(has(big_html, "formatted_body"));
  CHECK_FALSE(has(big_html, "format"));
  // HTML under 32 KiB, but body and HTML together over the event budget.
  const auto heading = "# " + std::string(31000, 'h');
  const auto both = text_content(heading, nullptr, {});
  CHECK(both.size() <= max_content_bytes);
  CHECK_FALSE(has(parsed(both), "formatted_body"));
  // A smaller heading keeps its HTML.
  CHECK(str(parsed(text_content("# " + std::string(10000, 'h'), nullptr, {})), "formatted_body") ==
        "<h1>" + std::string(10000, 'h') + "</h1>");
}

TEST_CASE("text that JSON escaping inflates is split again to fit the event budget", "[matrix]") {
  const std::string controls(100000, '\x01');  // six bytes each as JSON: \u0001
  const auto contents = text_contents(controls, nullptr, {});
  std::size_t total = 0;
  for (const auto& c : contents) {
    CHECK(c.size() <= max_content_bytes);
    total += str(parsed(c), "body").size();
  }
  CHECK(total == controls.size());
  const std::string quotes(70000, '"');
  for (const auto& c : text_contents(quotes, nullptr, {})) CHECK(c.size() <= max_content_bytes);
}

// ---- Contents ----

TEST_CASE("text_content: plain text, no relation, mentions nobody", "[matrix]") {
  const auto doc = parsed(text_content("hello there", nullptr, {}));
  CHECK(str(doc, "msgtype") == "m.text");
  CHECK(str(doc, "body") == "hello there");
  CHECK_FALSE(has(doc, "format"));
  CHECK_FALSE(has(doc, "formatted_body"));
  CHECK_FALSE(has(doc, "m.relates_to"));
  CHECK(user_ids(doc).empty());
  CHECK(doc.MemberCount() == 3);
}

TEST_CASE("text_content: a formatted reply with mentions, and no reply fallback", "[matrix]") {
  const reply_target reply{"$abc:example.org", ""};
  const std::string markdown = "**Yes**, [Alice](https://matrix.to/#/@alice:example.org): see `x`";
  const auto doc = parsed(
      text_content(markdown, &reply, {"@alice:example.org", "", "@bob:example.org", "@alice:example.org"}));
  CHECK(str(doc, "msgtype") == "m.text");
  CHECK(str(doc, "body") == markdown);  // no "> <@user> quote" fallback (spec v1.13)
  CHECK(str(doc, "format") == "org.matrix.custom.html");
  CHECK(str(doc, "formatted_body") ==
        "<strong>Yes</strong>, <a href=\"https://matrix.to/#/@alice:example.org\">Alice</a>: see "
        "<code>x</code>");
  CHECK(str(doc, "formatted_body").find("mx-reply") == std::string::npos);
  REQUIRE(has(doc, "m.relates_to"));
  const auto& rel = doc["m.relates_to"];
  CHECK(rel.MemberCount() == 1);
  CHECK(str(rel["m.in_reply_to"], "event_id") == "$abc:example.org");
  CHECK(user_ids(doc) == std::vector<std::string>{"@alice:example.org", "@bob:example.org"});
  // An empty target is no reply.
  const reply_target none;
  CHECK_FALSE(has(parsed(text_content("x", &none, {})), "m.relates_to"));
}

TEST_CASE("text_content: replies in a thread stay in the thread", "[matrix]") {
  const reply_target in_thread{"$msg:example.org", "$root:example.org"};
  const auto doc = parsed(text_content("ok", &in_thread, {}));
  const auto& rel = doc["m.relates_to"];
  CHECK(str(rel, "rel_type") == "m.thread");
  CHECK(str(rel, "event_id") == "$root:example.org");
  CHECK(str(rel["m.in_reply_to"], "event_id") == "$msg:example.org");
  REQUIRE(rel["is_falling_back"].IsBool());
  CHECK_FALSE(rel["is_falling_back"].GetBool());

  const reply_target thread_only{"", "$root:example.org"};
  const auto only = parsed(text_content("ok", &thread_only, {}));
  CHECK(str(only["m.relates_to"]["m.in_reply_to"], "event_id") == "$root:example.org");
  CHECK(only["m.relates_to"]["is_falling_back"].GetBool());

  // Later parts of a long reply: still in the thread, the reply only a fallback.
  std::string long_text;
  for (int i = 0; i < 3; ++i) long_text += std::string(20000, 'a' + i) + "\n\n";
  const auto contents = text_contents(long_text, &in_thread, {"@alice:example.org"});
  REQUIRE(contents.size() == 3);
  for (std::size_t i = 0; i < contents.size(); ++i) {
    const auto part = parsed(contents[i]);
    const auto& r = part["m.relates_to"];
    CHECK(str(r, "rel_type") == "m.thread");
    CHECK(str(r, "event_id") == "$root:example.org");
    CHECK(str(r["m.in_reply_to"], "event_id") == "$msg:example.org");
    CHECK(r["is_falling_back"].GetBool() == (i > 0));
    CHECK(user_ids(part).size() == (i == 0 ? 1u : 0u));
  }
}

TEST_CASE("untrusted text cannot break out of its JSON string", "[matrix]") {
  const std::string evil = "\",\"msgtype\":\"m.evil\",\"x\":\"\\ </script> \x01\x1f\t\n\xe2\x80\xa8 end";
  const reply_target reply{"$id\"}},\"evil\":{\"", ""};
  const auto doc = parsed(text_content(evil, &reply, {"@a\":b"}));
  CHECK(str(doc, "msgtype") == "m.text");
  CHECK(str(doc, "body") == evil);
  CHECK_FALSE(has(doc, "x"));
  CHECK(str(doc["m.relates_to"]["m.in_reply_to"], "event_id") == reply.event_id);
  CHECK(user_ids(doc) == std::vector<std::string>{"@a\":b"});
  // Invalid UTF-8 in every field becomes U+FFFD rather than invalid JSON.
  const auto bad = parsed(reaction_content("$e\xff", "\xf0\x9f"));
  CHECK(str(bad["m.relates_to"], "event_id") == "$e\xEF\xBF\xBD");
  CHECK(str(bad["m.relates_to"], "key") == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("notice_content is an m.notice", "[matrix]") {
  const auto doc = parsed(notice_content("This room is *encrypted*; I cannot read it.", nullptr, {}));
  CHECK(str(doc, "msgtype") == "m.notice");
  CHECK(str(doc, "body") == "This room is *encrypted*; I cannot read it.");
  CHECK(str(doc, "formatted_body") == "This room is <em>encrypted</em>; I cannot read it.");
  CHECK(user_ids(doc).empty());
  const auto notices = text_contents(std::string(40000, 'n'), nullptr, {}, text_kind::notice);
  REQUIRE(notices.size() == 2);
  for (const auto& n : notices) CHECK(str(parsed(n), "msgtype") == "m.notice");
}

TEST_CASE("file_content: msgtype from the mimetype, filename, url and info", "[matrix]") {
  CHECK(msgtype_for_mimetype("image/png") == "m.image");
  CHECK(msgtype_for_mimetype("IMAGE/JPEG; q=1") == "m.image");
  CHECK(msgtype_for_mimetype("audio/ogg") == "m.audio");
  CHECK(msgtype_for_mimetype("video/mp4") == "m.video");
  CHECK(msgtype_for_mimetype("application/pdf") == "m.file");
  CHECK(msgtype_for_mimetype("text/plain") == "m.file");
  CHECK(msgtype_for_mimetype("image") == "m.file");
  CHECK(msgtype_for_mimetype("") == "m.file");

  const auto doc = parsed(file_content("mxc://example.org/abc", "chart \"1\".png", "image/png", 27253));
  CHECK(str(doc, "msgtype") == "m.image");
  CHECK(str(doc, "body") == "chart \"1\".png");
  CHECK(str(doc, "filename") == "chart \"1\".png");
  CHECK(str(doc, "url") == "mxc://example.org/abc");
  CHECK(str(doc["info"], "mimetype") == "image/png");
  REQUIRE(doc["info"]["size"].IsUint64());
  CHECK(doc["info"]["size"].GetUint64() == 27253);
  CHECK(doc["m.mentions"].IsObject());
  CHECK(doc["m.mentions"].MemberCount() == 0);
  CHECK_FALSE(has(doc, "m.relates_to"));
  CHECK_FALSE(has(doc, "formatted_body"));

  const reply_target reply{"$q:example.org", ""};
  const auto other = parsed(file_content("mxc://e/x", "", "", 5'000'000'000ULL, "m.file", &reply));
  CHECK(str(other, "msgtype") == "m.file");
  CHECK(str(other, "body") == "file");
  CHECK_FALSE(has(other["info"], "mimetype"));
  CHECK(other["info"]["size"].GetUint64() == 5'000'000'000ULL);
  CHECK(str(other["m.relates_to"]["m.in_reply_to"], "event_id") == "$q:example.org");
  CHECK(str(parsed(file_content("mxc://e/x", "a.mp3", "audio/mpeg", 1)), "msgtype") == "m.audio");
  CHECK(str(parsed(file_content("mxc://e/x", "a.webm", "video/webm", 1)), "msgtype") == "m.video");
  CHECK(str(parsed(file_content("mxc://e/x", "a.png", "image/png", 1, "m.file")), "msgtype") == "m.file");
}

TEST_CASE("reaction_content is an m.annotation", "[matrix]") {
  const auto doc = parsed(reaction_content("$target:example.org", "👍"));
  CHECK(doc.MemberCount() == 1);
  const auto& rel = doc["m.relates_to"];
  CHECK(rel.MemberCount() == 3);
  CHECK(str(rel, "rel_type") == "m.annotation");
  CHECK(str(rel, "event_id") == "$target:example.org");
  CHECK(str(rel, "key") == "👍");
}

TEST_CASE("typing, presence and receipt bodies", "[matrix]") {
  const auto on = parsed(typing_body(true, std::chrono::seconds(30)));
  CHECK(on["typing"].GetBool());
  REQUIRE(on["timeout"].IsInt64());
  CHECK(on["timeout"].GetInt64() == 30000);
  const auto off = parsed(typing_body(false, std::chrono::seconds(30)));
  CHECK_FALSE(off["typing"].GetBool());
  CHECK_FALSE(has(off, "timeout"));
  CHECK(parsed(typing_body(true, std::chrono::milliseconds(-5)))["timeout"].GetInt64() == 0);

  const auto presence = parsed(presence_body("Thinking \"hard\" 🤔"));
  CHECK(str(presence, "presence") == "online");
  CHECK(str(presence, "status_msg") == "Thinking \"hard\" 🤔");
  CHECK(str(parsed(presence_body("")), "status_msg").empty());

  CHECK(receipt_body() == "{}");
  CHECK(parsed(receipt_body()).MemberCount() == 0);
}

// ---- Buttons ----

TEST_CASE("buttons become a numbered list", "[matrix]") {
  CHECK(buttons_text("Pick one:", {"Yes", "No"}) == "Pick one:\n\n1. Yes\n2. No");
  CHECK(buttons_text("", {"Yes", "No"}) == "1. Yes\n2. No");
  CHECK(buttons_text("Pick one:\n\n", {}) == "Pick one:");
  CHECK(buttons_text("Q?", {"two\nlines", " padded "}) == "Q?\n\n1. two lines\n2. padded");
  // After a "1." list: a new list, numbered from 1 again.
  const auto after_list = buttons_text("Options:\n\n1. alpha\n2. beta", {"Yes", "No"});
  CHECK(after_list == "Options:\n\n1. alpha\n2. beta\n\n1) Yes\n2) No");
  const auto html = markdown_to_html(after_list);
  CHECK(html.find("<ol>\n<li>alpha") != std::string::npos);
  CHECK(html.find("</ol>\n<ol>\n<li>Yes</li>") != std::string::npos);
  // After an unclosed code block: closed first, so the list is not code.
  CHECK(buttons_text("```\ncode", {"A"}) == "```\ncode\n```\n\n1. A");
}

TEST_CASE("a reply picks a button by number or label", "[matrix]") {
  const std::vector<std::string> labels{"Yes", "No", "Ask me later"};
  CHECK(button_choice("2", labels) == 1u);
  CHECK(button_choice(" 2. ", labels) == 1u);
  CHECK(button_choice("2)", labels) == 1u);
  CHECK(button_choice("\n1\n", labels) == 0u);
  CHECK(button_choice("no", labels) == 1u);
  CHECK(button_choice("  YES ", labels) == 0u);
  CHECK(button_choice("ask ME later", labels) == 2u);
  CHECK(button_choice("2. No", labels) == 1u);
  CHECK(button_choice("3) ask me later", labels) == 2u);
  CHECK(button_choice("> <@bot:example.org> Pick one\n> 1. Yes\n\n2", labels) == 1u);  // old reply fallback
  for (const char* none :
       {"", "   ", "0", "4", "2. Yes", "yes please", "maybe", "12345678901234567890", "-1", "1.5"}) {
    INFO(none);
    CHECK_FALSE(button_choice(none, labels));
  }
  CHECK_FALSE(button_choice("1", {}));
  // Labels that read like numbers: a number in range is the position.
  const std::vector<std::string> numbers{"10", "20"};
  CHECK(button_choice("2", numbers) == 1u);
  CHECK(button_choice("20", numbers) == 1u);
  CHECK(button_choice("10", numbers) == 0u);
}
