#include "stargazer/platform/matrix/message_format.hpp"

#include "stargazer/core/strings.hpp"
#include "stargazer/core/utf8.hpp"

#include <fmt/format.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#define CMARK_NO_SHORT_NAMES  // cmark.h would otherwise define NODE_TEXT, ORDERED_LIST, ... as macros
#include <algorithm>
#include <cctype>
#include <cmark.h>
#include <memory>

namespace stargazer::platform::matrix {

namespace {

// ---- UTF-8 ----

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// ---- JSON ----

using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

void put_string(json_writer& w, std::string_view s) {
  if (utf8::is_valid(s)) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  } else {
    const auto repaired = utf8::repaired(s);
    w.String(repaired.data(), static_cast<rapidjson::SizeType>(repaired.size()));
  }
}

void put(json_writer& w, const char* key, std::string_view value) {
  w.Key(key);
  put_string(w, value);
}

std::string text_of(const rapidjson::StringBuffer& buf) {
  return {buf.GetString(), buf.GetSize()};
}

// ---- Markdown ----

struct node_deleter {
  void operator()(cmark_node* n) const { cmark_node_free(n); }
};
struct iter_deleter {
  void operator()(cmark_iter* i) const { cmark_iter_free(i); }
};
using node_ptr = std::unique_ptr<cmark_node, node_deleter>;

node_ptr parse(std::string_view markdown) {
  return node_ptr(cmark_parse_document(markdown.data(), markdown.size(), CMARK_OPT_DEFAULT));
}

// Nodes the iterator enters and leaves (the rest it only enters).
bool is_container(cmark_node_type type) {
  switch (type) {
    case CMARK_NODE_HTML_BLOCK:
    case CMARK_NODE_THEMATIC_BREAK:
    case CMARK_NODE_CODE_BLOCK:
    case CMARK_NODE_TEXT:
    case CMARK_NODE_SOFTBREAK:
    case CMARK_NODE_LINEBREAK:
    case CMARK_NODE_CODE:
    case CMARK_NODE_HTML_INLINE:
      return false;
    default:
      return true;
  }
}

std::string_view url_of(cmark_node* node) {
  const char* url = cmark_node_get_url(node);
  return url ? std::string_view(url) : std::string_view();
}

// The spec lets clients render `<a href>` only with these schemes (and no relative URLs).
bool allowed_link(std::string_view url) {
  const auto colon = url.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  const auto scheme = ascii_lower(url.substr(0, colon));
  return scheme == "https" || scheme == "http" || scheme == "ftp" || scheme == "mailto" || scheme == "magnet";
}

// `<img src>` must be in the media repository.
bool allowed_image(std::string_view url) {
  return url.size() > 6 && iequals(url.substr(0, 6), "mxc://");
}

bool inside_link(cmark_node* node) {
  for (auto* p = cmark_node_parent(node); p; p = cmark_node_parent(p))
    if (cmark_node_get_type(p) == CMARK_NODE_LINK) return true;
  return false;
}

cmark_node* new_text(std::string_view literal) {
  auto* text = cmark_node_new(CMARK_NODE_TEXT);
  cmark_node_set_literal(text, std::string(literal).c_str());
  return text;
}

// Calls `put` with text nodes for the lines of `literal` and soft breaks between them.
template <class Put>
void put_lines(std::string_view literal, Put put) {
  while (!literal.empty() && (literal.back() == '\n' || literal.back() == '\r')) literal.remove_suffix(1);
  for (bool first = true;; first = false) {
    if (!first) put(cmark_node_new(CMARK_NODE_SOFTBREAK));
    const auto nl = literal.find('\n');
    auto line = literal.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) put(new_text(line));
    if (nl == std::string_view::npos) break;
    literal.remove_prefix(nl + 1);
  }
}

// Replaces `node` with its children.
void unwrap(cmark_node* node) {
  while (auto* child = cmark_node_first_child(node)) cmark_node_insert_before(node, child);
  cmark_node_free(node);
}

// Raw HTML becomes the text it is; links and images keep only what clients may render.
void make_safe(cmark_node* node) {
  const auto literal = [&] {
    const char* s = cmark_node_get_literal(node);
    return s ? std::string(s) : std::string();
  };
  switch (cmark_node_get_type(node)) {
    case CMARK_NODE_HTML_INLINE:
      put_lines(literal(), [&](cmark_node* n) { cmark_node_insert_before(node, n); });
      cmark_node_free(node);
      break;
    case CMARK_NODE_HTML_BLOCK: {
      auto* paragraph = cmark_node_new(CMARK_NODE_PARAGRAPH);
      cmark_node_insert_before(node, paragraph);
      put_lines(literal(), [&](cmark_node* n) { cmark_node_append_child(paragraph, n); });
      cmark_node_free(node);
      break;
    }
    case CMARK_NODE_LINK:
      if (!allowed_link(url_of(node)))
        unwrap(node);
      else
        cmark_node_set_title(node, "");  // `title` is not among the attributes `<a>` may have
      break;
    case CMARK_NODE_IMAGE:
      if (allowed_image(url_of(node))) break;
      if (!allowed_link(url_of(node)) || inside_link(node)) {
        unwrap(node);  // the alt text
      } else {
        auto* link = cmark_node_new(CMARK_NODE_LINK);
        cmark_node_set_url(link, std::string(url_of(node)).c_str());
        while (auto* child = cmark_node_first_child(node)) cmark_node_append_child(link, child);
        if (!cmark_node_first_child(link)) cmark_node_append_child(link, new_text(url_of(node)));
        cmark_node_insert_before(node, link);
        cmark_node_free(node);
      }
      break;
    default:
      break;
  }
}

// Whether plain text still holds something the HTML would show differently: a backslash
// escape (or a backslash line break) or an entity.
bool resolves_escapes(std::string_view md) {
  for (std::size_t i = 0; i + 1 < md.size(); ++i) {
    const auto next = static_cast<unsigned char>(md[i + 1]);
    if (md[i] == '\\' && ((next < 0x80 && std::ispunct(next)) || next == '\n')) return true;
    if (md[i] == '&') {
      std::size_t j = i + 1;
      if (md[j] == '#') ++j;
      const auto start = j;
      while (j < md.size() && j - start < 32 && std::isalnum(static_cast<unsigned char>(md[j]))) ++j;
      if (j > start && j < md.size() && md[j] == ';') return true;
    }
  }
  return false;
}

struct rendering {
  std::string html;
  bool formatted = false;  // shows more than the plain text
  bool too_deep = false;   // nests more than max_html_depth tags
};

// `markdown` is valid UTF-8.
rendering render(std::string_view markdown) {
  rendering out;
  const auto doc = parse(markdown);
  if (!doc) return out;
  std::vector<cmark_node*> edits;
  std::size_t depth = 0, deepest = 0;  // depth counts the document itself
  {
    const std::unique_ptr<cmark_iter, iter_deleter> it(cmark_iter_new(doc.get()));
    for (cmark_event_type ev; (ev = cmark_iter_next(it.get())) != CMARK_EVENT_DONE;) {
      auto* node = cmark_iter_get_node(it.get());
      const auto type = cmark_node_get_type(node);
      if (ev == CMARK_EVENT_EXIT) {
        --depth;
        continue;
      }
      if (is_container(type))
        deepest = std::max(deepest, ++depth);
      else
        deepest = std::max(deepest, depth + (type == CMARK_NODE_CODE_BLOCK ? 2 : 1));  // <pre><code>
      switch (type) {
        case CMARK_NODE_DOCUMENT:
        case CMARK_NODE_PARAGRAPH:
        case CMARK_NODE_TEXT:
        case CMARK_NODE_SOFTBREAK:
        case CMARK_NODE_LINEBREAK:
          break;
        case CMARK_NODE_HTML_BLOCK:
        case CMARK_NODE_HTML_INLINE:
          edits.push_back(node);  // shown as text, as the plain body shows it
          break;
        case CMARK_NODE_LINK:
        case CMARK_NODE_IMAGE:
          edits.push_back(node);
          out.formatted = true;
          break;
        default:
          out.formatted = true;
      }
    }
  }
  // In document order: an unwrapped link has been dealt with before the image in it.
  for (auto* node : edits) make_safe(node);
  if (!out.formatted) out.formatted = resolves_escapes(markdown);
  out.too_deep = deepest > max_html_depth + 1;

  // Without CMARK_OPT_UNSAFE cmark also leaves out raw HTML (none is left) and
  // javascript:/vbscript:/file:/data: URLs (none is left either).
  char* raw = cmark_render_html(doc.get(), CMARK_OPT_HARDBREAKS);
  if (!raw) return out;
  out.html = raw;
  cmark_get_default_mem_allocator()->free(raw);

  auto* first = cmark_node_first_child(doc.get());
  std::string_view html = out.html;
  if (first && first == cmark_node_last_child(doc.get()) &&
      cmark_node_get_type(first) == CMARK_NODE_PARAGRAPH && html.starts_with("<p>") &&
      html.ends_with("</p>\n")) {
    html = html.substr(3, html.size() - 3 - 5);
  }
  while (!html.empty() && html.back() == '\n') html.remove_suffix(1);
  out.html = std::string(html);
  return out;
}

// ---- Splitting ----

// A fenced code block: [open, body) is its opening line, [close, end) its closing one
// (both text.size() when it is not closed).
struct fence_block {
  std::size_t open = 0, body = 0, close = 0, end = 0;
  std::string indent;         // the opening line's own indentation
  std::string fence;          // "```", "~~~~", ...
  std::string reopen_indent;  // at most three spaces: four would make an indented code block
  std::string reopen;         // reopen_indent + fence + the language
};

// Fences at any indentation count (those in list items are indented); a line of at least
// as many of the same character, and nothing else, closes one. Absurd fences (longer than
// 32 characters, or indented by more than 32) are ignored: closing and reopening them
// would take too much room.
std::vector<fence_block> find_fences(std::string_view text) {
  std::vector<fence_block> blocks;
  std::optional<fence_block> open;
  for (std::size_t ls = 0; ls < text.size();) {
    const auto nl = text.find('\n', ls);
    const auto next = nl == std::string_view::npos ? text.size() : nl + 1;
    const auto line = text.substr(ls, (nl == std::string_view::npos ? text.size() : nl) - ls);
    const auto indent = line.find_first_not_of(" \t");
    if (indent != std::string_view::npos && indent <= 32 && (line[indent] == '`' || line[indent] == '~')) {
      const char c = line[indent];
      auto run_end = line.find_first_not_of(c, indent);
      if (run_end == std::string_view::npos) run_end = line.size();
      const auto run = run_end - indent;
      const auto after = line.substr(run_end);
      if (!open) {
        if (run >= 3 && run <= 32 && (c == '~' || after.find('`') == std::string_view::npos)) {
          fence_block b;
          b.open = ls;
          b.body = next;
          b.indent = std::string(line.substr(0, indent));
          b.fence = std::string(run, c);
          b.reopen_indent = std::string(std::min<std::size_t>(indent, 3), ' ');
          const auto info = trim(after);
          const auto language = info.substr(0, info.find_first_of(" \t"));
          b.reopen =
              b.reopen_indent + b.fence + std::string(language.size() <= 32 ? language : std::string_view());
          open = std::move(b);
        }
      } else if (c == open->fence[0] && run >= open->fence.size() &&
                 after.find_first_not_of(" \t\r") == std::string_view::npos) {
        open->close = ls;
        open->end = next;
        blocks.push_back(std::move(*open));
        open.reset();
      }
    }
    ls = next;
  }
  if (open) {
    open->close = open->end = text.size();
    blocks.push_back(std::move(*open));
  }
  return blocks;
}

class splitter {
 public:
  splitter(std::string_view text, std::size_t max_bytes)
      : text_(text), max_(max_bytes), blocks_(find_fences(text)) {}

  std::vector<std::string> run() {
    std::vector<std::string> parts;
    while (pos_ < text_.size()) {
      if (!carried_) {
        while (pos_ < text_.size() && (text_[pos_] == '\n' || text_[pos_] == '\r')) ++pos_;
        if (pos_ == text_.size()) break;
      }
      auto cut = size_of(text_.size()) <= max_ ? text_.size() : choose_cut();
      const fence_block* open = cut < text_.size() ? splitting(cut) : nullptr;
      if (open && size_of(cut) > max_)
        open = nullptr;  // only after a forced cut; cannot happen with sane fences

      std::string part = carried_ ? carried_->reopen + "\n" : std::string();
      auto chunk = text_.substr(pos_, cut - pos_);
      if (open) {
        while (!chunk.empty() && (chunk.back() == '\n' || chunk.back() == '\r')) chunk.remove_suffix(1);
        part += chunk;
        part += '\n';
        part += closer(open);
      } else {
        part += chunk;
      }
      std::string_view t = part;
      while (!t.empty() && is_space(t.back())) t.remove_suffix(1);
      while (!t.empty() && (t.front() == '\n' || t.front() == '\r')) t.remove_prefix(1);
      if (!t.empty() && !(carried_ && t == carried_->reopen)) parts.emplace_back(t);
      pos_ = cut;
      carried_ = open;
    }
    return parts;
  }

 private:
  // The block a cut at `c` (0 < c < size) would split: opened before `c`, not closed by it.
  const fence_block* splitting(std::size_t c) const {
    auto it = std::upper_bound(blocks_.begin(), blocks_.end(), c,
                               [](std::size_t v, const fence_block& b) { return v <= b.open; });
    if (it == blocks_.begin()) return nullptr;
    --it;
    return c < it->end ? &*it : nullptr;
  }

  std::string closer(const fence_block* b) const {
    return (b == carried_ ? b->reopen_indent : b->indent) + b->fence;
  }

  std::size_t head() const { return carried_ ? carried_->reopen.size() + 1 : 0; }

  // The most bytes the part [pos_, c) takes (with the fence reopened before it and closed after).
  std::size_t size_of(std::size_t c) const {
    auto size = head() + (c - pos_);
    if (c < text_.size())
      if (const auto* b = splitting(c)) size += 1 + closer(b).size();
    return size;
  }

  // Whether the line ending just before `c` (text_[c - 1] == '\n') is blank.
  bool after_blank_line(std::size_t c) const {
    std::size_t i = c - 1;
    while (i > pos_ && (text_[i - 1] == ' ' || text_[i - 1] == '\t' || text_[i - 1] == '\r')) --i;
    return i > pos_ && text_[i - 1] == '\n';
  }

  std::size_t choose_cut() const {
    const auto room = max_ - head();
    const auto window_end = pos_ + utf8_prefix(text_.substr(pos_), room).size();
    const auto min_cut = pos_ + room / 4;  // a tiny part is worse than a cut mid-word
    // Latest cut of each kind (0: none; every cut is > pos_).
    std::size_t para_out = 0, line_out = 0, any_line_out = 0, line_in = 0, word_out = 0, word_in = 0;
    for (auto c = window_end; c > pos_; --c) {
      const char prev = text_[c - 1];
      const bool line = prev == '\n';
      if (!line && prev != ' ' && prev != '\t') continue;
      if (size_of(c) > max_) continue;
      if (const auto* b = splitting(c); !b) {
        if (line) {
          if (!any_line_out) any_line_out = c;
          if (c >= min_cut && !line_out) line_out = c;
          if (c >= min_cut && !para_out && after_blank_line(c)) para_out = c;
        } else if (c >= min_cut && !word_out) {
          word_out = c;
        }
      } else if (c >= min_cut) {
        // Not just after the opening line nor just before the closing one: an empty block.
        if (line && !line_in && c != b->body && c != b->close) line_in = c;
        if (!line && !word_in) word_in = c;
      }
    }
    if (para_out) return para_out;
    if (line_out) return line_out;
    // Rather than split a code block, end the part early before it if it then fits whole.
    if (const auto* b = splitting(window_end);
        b && any_line_out && b->open >= any_line_out && b->end - any_line_out <= max_)
      return any_line_out;
    if (line_in) return line_in;
    if (word_out) return word_out;
    if (word_in) return word_in;
    auto c = window_end;  // anywhere between two characters
    while (c > pos_ && size_of(c) > max_) {
      --c;
      while (c > pos_ && is_continuation(text_[c])) --c;
    }
    return c > pos_ ? c : window_end;
  }

  std::string_view text_;
  std::size_t max_;
  std::vector<fence_block> blocks_;
  std::size_t pos_ = 0;
  const fence_block* carried_ = nullptr;  // the block reopened at the start of this part
};

// ---- Contents ----

void put_relation(json_writer& w, const reply_target* reply, bool later_part) {
  if (!reply || (reply->event_id.empty() && reply->thread_root_id.empty())) return;
  if (reply->thread_root_id.empty() && later_part) return;
  w.Key("m.relates_to");
  w.StartObject();
  if (!reply->thread_root_id.empty()) {
    put(w, "rel_type", "m.thread");
    put(w, "event_id", reply->thread_root_id);
  }
  w.Key("m.in_reply_to");
  w.StartObject();
  put(w, "event_id", reply->event_id.empty() ? reply->thread_root_id : reply->event_id);
  w.EndObject();
  if (!reply->thread_root_id.empty()) {
    // true: the reply is only there for clients without threads.
    w.Key("is_falling_back");
    w.Bool(later_part || reply->event_id.empty());
  }
  w.EndObject();
}

void put_mentions(json_writer& w, const std::vector<std::string>& user_ids) {
  w.Key("m.mentions");
  w.StartObject();
  w.Key("user_ids");
  w.StartArray();
  std::vector<std::string_view> seen;
  for (const auto& id : user_ids) {
    if (id.empty() || std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    put_string(w, id);
  }
  w.EndArray();
  w.EndObject();
}

std::string message_json(std::string_view msgtype, const formatted_text& text, const std::string* html,
                         const reply_target* reply, bool later_part,
                         const std::vector<std::string>& mentions) {
  rapidjson::StringBuffer buf;
  json_writer w(buf);
  w.StartObject();
  put(w, "msgtype", msgtype);
  put(w, "body", text.body);
  if (html) {
    put(w, "format", html_format);
    put(w, "formatted_body", *html);
  }
  put_relation(w, reply, later_part);
  put_mentions(w, mentions);
  w.EndObject();
  return text_of(buf);
}

std::string message_content(std::string_view msgtype, std::string_view markdown, const reply_target* reply,
                            bool later_part, const std::vector<std::string>& mentions) {
  const auto text = format_markdown(markdown);
  if (text.formatted_body && text.formatted_body->size() <= max_body_bytes) {
    auto json = message_json(msgtype, text, &*text.formatted_body, reply, later_part, mentions);
    if (json.size() <= max_content_bytes) return json;
  }
  return message_json(msgtype, text, nullptr, reply, later_part, mentions);
}

std::string_view msgtype_of(text_kind kind) {
  return kind == text_kind::notice ? "m.notice" : "m.text";
}

void append_contents(std::vector<std::string>& out, std::string_view markdown, const reply_target* reply,
                     const std::vector<std::string>& mentions, text_kind kind, std::size_t max_bytes) {
  static const std::vector<std::string> nobody;
  for (const auto& part : split_message(markdown, max_bytes)) {
    const bool later = !out.empty();
    auto json = message_content(msgtype_of(kind), part, reply, later, later ? nobody : mentions);
    if (json.size() > max_content_bytes && max_bytes > 256) {
      append_contents(out, part, reply, mentions, kind, std::max<std::size_t>(max_bytes / 2, 256));
      continue;
    }
    out.push_back(std::move(json));
  }
}

// Whether Markdown ends inside a list numbered "1.", "2.", ... (a list after it, even
// past a blank line, would continue it).
bool ends_with_period_list(std::string_view markdown) {
  const auto doc = parse(markdown);
  auto* last = doc ? cmark_node_last_child(doc.get()) : nullptr;
  return last && cmark_node_get_type(last) == CMARK_NODE_LIST &&
         cmark_node_get_list_type(last) == CMARK_ORDERED_LIST &&
         cmark_node_get_list_delim(last) == CMARK_PERIOD_DELIM;
}

std::string one_line(std::string_view label) {
  std::string out(trim(label));
  for (auto& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

// The reply without a reply fallback: the "> " lines it starts with.
std::string_view strip_reply_fallback(std::string_view body) {
  while (body.starts_with("> ")) {
    const auto nl = body.find('\n');
    body = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
  }
  return body;
}

}  // namespace

// ---- Markdown ----

std::string markdown_to_html(std::string_view markdown) {
  return render(utf8::repaired(markdown)).html;
}

formatted_text format_markdown(std::string_view markdown) {
  formatted_text out{utf8::repaired(markdown), std::nullopt};
  auto r = render(out.body);
  if (r.formatted && !r.too_deep) out.formatted_body = std::move(r.html);
  return out;
}

bool has_formatting(std::string_view markdown) {
  return format_markdown(markdown).formatted_body.has_value();
}

// ---- Splitting ----

std::vector<std::string> split_message(std::string_view text, std::size_t max_bytes) {
  const auto valid = utf8::repaired(text);
  return splitter(valid, std::max<std::size_t>(max_bytes, 256)).run();
}

// ---- Contents ----

// No reply fallback ("> <@user> quoted text" in body, <mx-reply> in formatted_body): spec
// v1.13 removed it; clients render the quote from m.in_reply_to.
std::string text_content(std::string_view markdown, const reply_target* reply,
                         const std::vector<std::string>& mention_user_ids) {
  return message_content("m.text", markdown, reply, false, mention_user_ids);
}

std::string notice_content(std::string_view markdown, const reply_target* reply,
                           const std::vector<std::string>& mention_user_ids) {
  return message_content("m.notice", markdown, reply, false, mention_user_ids);
}

std::vector<std::string> text_contents(std::string_view markdown, const reply_target* reply,
                                       const std::vector<std::string>& mention_user_ids, text_kind kind,
                                       std::size_t max_bytes) {
  std::vector<std::string> out;
  append_contents(out, markdown, reply, mention_user_ids, kind, max_bytes);
  return out;
}

std::string_view msgtype_for_mimetype(std::string_view mimetype) {
  const auto type = ascii_lower(trim(mimetype.substr(0, mimetype.find(';'))));
  if (type.starts_with("image/")) return "m.image";
  if (type.starts_with("audio/")) return "m.audio";
  if (type.starts_with("video/")) return "m.video";
  return "m.file";
}

std::string file_content(std::string_view mxc_uri, std::string_view filename, std::string_view mimetype,
                         std::uint64_t size, std::string_view msgtype, const reply_target* reply) {
  const auto name = filename.empty() ? std::string_view("file") : filename;
  rapidjson::StringBuffer buf;
  json_writer w(buf);
  w.StartObject();
  put(w, "msgtype", msgtype.empty() ? msgtype_for_mimetype(mimetype) : msgtype);
  put(w, "body", name);  // the same as `filename`: no caption
  put(w, "filename", name);
  put(w, "url", mxc_uri);
  w.Key("info");
  w.StartObject();
  if (!mimetype.empty()) put(w, "mimetype", mimetype);
  w.Key("size");
  w.Uint64(size);
  w.EndObject();
  put_relation(w, reply, false);
  w.Key("m.mentions");
  w.StartObject();
  w.EndObject();
  w.EndObject();
  return text_of(buf);
}

std::string reaction_content(std::string_view event_id, std::string_view key) {
  rapidjson::StringBuffer buf;
  json_writer w(buf);
  w.StartObject();
  w.Key("m.relates_to");
  w.StartObject();
  put(w, "rel_type", "m.annotation");
  put(w, "event_id", event_id);
  put(w, "key", key);
  w.EndObject();
  w.EndObject();
  return text_of(buf);
}

// ---- Buttons ----

std::string buttons_text(std::string_view text, const std::vector<std::string>& labels) {
  std::string out(trim(text));
  if (labels.empty()) return out;
  if (!out.empty()) {
    // A list after an unclosed code block would be code: close it first.
    if (const auto blocks = find_fences(out); !blocks.empty() && blocks.back().close == out.size())
      out += "\n" + blocks.back().indent + blocks.back().fence;
  }
  const char delim = ends_with_period_list(out) ? ')' : '.';
  if (!out.empty()) out += "\n\n";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += '\n';
    out += fmt::format("{}{} {}", i + 1, delim, one_line(labels[i]));
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::optional<std::size_t> button_choice(std::string_view reply_body,
                                         const std::vector<std::string>& labels) {
  const auto reply = trim(strip_reply_fallback(reply_body));
  if (reply.empty() || labels.empty()) return std::nullopt;
  std::size_t digits = 0;
  while (digits < reply.size() && reply[digits] >= '0' && reply[digits] <= '9') ++digits;
  if (digits > 0 && digits <= 9) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < digits; ++i) n = n * 10 + static_cast<std::size_t>(reply[i] - '0');
    auto rest = reply.substr(digits);
    if (!rest.empty() && (rest.front() == '.' || rest.front() == ')')) rest.remove_prefix(1);
    rest = trim(rest);
    if (n >= 1 && n <= labels.size() && (rest.empty() || iequals(rest, one_line(labels[n - 1]))))
      return n - 1;
  }
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (iequals(reply, one_line(labels[i]))) return i;
  return std::nullopt;
}

// ---- Request bodies ----

std::string typing_body(bool typing, std::chrono::milliseconds timeout) {
  rapidjson::StringBuffer buf;
  json_writer w(buf);
  w.StartObject();
  w.Key("typing");
  w.Bool(typing);
  if (typing) {
    w.Key("timeout");
    w.Int64(std::max<std::int64_t>(timeout.count(), 0));
  }
  w.EndObject();
  return text_of(buf);
}

std::string presence_body(std::string_view status_msg) {
  rapidjson::StringBuffer buf;
  json_writer w(buf);
  w.StartObject();
  put(w, "presence", "online");
  put(w, "status_msg", status_msg);
  w.EndObject();
  return text_of(buf);
}

std::string receipt_body() {
  return "{}";
}

}  // namespace stargazer::platform::matrix
