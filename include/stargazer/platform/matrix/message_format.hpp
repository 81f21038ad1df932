#pragma once
// The JSON the Matrix adapter sends, built without I/O: `m.room.message` contents (text,
// notices, files) from the model's Markdown, reactions, and the bodies of the typing,
// presence and read-receipt requests. Every string goes through rapidjson::Writer (never
// pasted into JSON text), and invalid UTF-8 becomes U+FFFD first: homeservers refuse
// JSON that is not UTF-8.
//
// Markdown becomes `formatted_body` HTML (format `org.matrix.custom.html`) with libcmark
// (CommonMark 0.30). The HTML is safe to send:
//  - raw HTML in the Markdown is shown as text: `<script>` reaches the reader as
//    "&lt;script&gt;" (cmark alone would drop it and leave a comment; the reader would not
//    see what the model wrote, and the plain `body` shows it anyway);
//  - links keep only the schemes the spec lets clients render (http, https, ftp, mailto,
//    magnet); any other link (javascript:, data:, relative) becomes its text;
//  - images keep only mxc:// sources; an image elsewhere becomes a link to it (its alt text),
//    as clients drop `<img>` that does not point into the media repository;
//  - newlines are line breaks (`<br />`), as in the plain `body` and as Element sends them.
// `body` is the Markdown itself (Element's choice too: it reads well as plain text).
// A message whose Markdown has no formatting gets no `formatted_body` at all, and neither
// does one whose HTML would nest deeper than the spec's 100 levels or be too large.
//
// Sizes: a homeserver refuses an event over 65,536 bytes of JSON, of which the envelope
// (room id, sender, hashes, signatures, auth and prev events) takes one or two KiB. A
// reply is split into parts of at most 32 KiB of Markdown (`split_message`), and each
// part's content is kept under `max_content_bytes` by dropping its `formatted_body` when
// body and HTML together would not fit (`text_contents` does both).
//
// Replies: `m.relates_to.m.in_reply_to` only. Since spec v1.13 a reply carries no fallback
// (no "> <@user> quoted text" in `body`, no `<mx-reply>` in `formatted_body`), so none is
// added. Every text content carries `m.mentions` (an empty `user_ids` says "mentions
// nobody": without `m.mentions` old push rules would scan `body` for names and "@room").
//
// Buttons: Matrix has none. `buttons_text` appends the labels as a numbered list and
// `button_choice` reads the user's answer (the number or the label).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::platform::matrix {

// The most Markdown one message carries (and the most HTML in its `formatted_body`).
inline constexpr std::size_t max_body_bytes = 32 * 1024;
// The most JSON one event's content takes: 64 KiB less room for the event's envelope.
inline constexpr std::size_t max_content_bytes = 60 * 1024;
// How deeply `formatted_body` may nest tags (the spec's limit).
inline constexpr std::size_t max_html_depth = 100;

inline constexpr std::string_view html_format = "org.matrix.custom.html";

// ---- Markdown ----

// The Markdown as HTML, safe as described above; a lone paragraph comes without its
// `<p>` (the spec asks for no needless tags). Always HTML, even for plain text and for
// nesting deeper than `max_html_depth` (format_markdown decides what is sent).
std::string markdown_to_html(std::string_view markdown);

struct formatted_text {
  std::string body;                           // the Markdown (valid UTF-8)
  std::optional<std::string> formatted_body;  // the HTML, when it shows more than `body`
};

// `formatted_body` is empty when the HTML would show nothing `body` does not: only
// paragraphs, line breaks and text (raw HTML counts as text: it is shown as such), no
// backslash escape or entity that the HTML would resolve. Also empty when the HTML nests
// more than `max_html_depth` tags.
formatted_text format_markdown(std::string_view markdown);

// Whether the Markdown has any formatting (format_markdown would give a formatted_body).
bool has_formatting(std::string_view markdown);

// ---- Splitting ----

// Parts in order, none empty (none at all for blank text), each at most `max_bytes` bytes
// (a smaller `max_bytes` counts as 256) and valid UTF-8 (an invalid byte becomes U+FFFD). A part ends at a paragraph break (a blank
// line) if one fits in its last three quarters, else at a line break, else after a space,
// else between two characters. Cuts stay out of fenced code blocks (``` or ~~~) when they
// can: before splitting a block, a part ends early at the line break before it if the
// whole block then fits in the next part. A block that must be split is cut at a line
// break inside it, closed at the end of the part and reopened (with its language) at the
// start of the next.
std::vector<std::string> split_message(std::string_view text, std::size_t max_bytes = max_body_bytes);

// ---- Event contents (JSON text) ----

// What a message answers. `event_id`: the event replied to (`m.in_reply_to`); empty for
// none. `thread_root_id`: the thread's root when the conversation is in a thread (empty
// otherwise); the content then carries `rel_type: m.thread` so that it stays in the
// thread, replying to `event_id` there (or, without one, to the root as the fallback for
// clients without threads, `is_falling_back: true`).
struct reply_target {
  std::string event_id;
  std::string thread_root_id;
};

// One `m.text` message: {"msgtype":"m.text","body":...,"format":...,"formatted_body":...,
// "m.relates_to":{"m.in_reply_to":{"event_id":...}},"m.mentions":{"user_ids":[...]}}.
// `format`/`formatted_body` only when the Markdown has formatting and the content fits in
// `max_content_bytes` with it (and the HTML in `max_body_bytes`); `m.relates_to` only with
// a `reply` (nullptr or an empty target for none). `mention_user_ids` (empty ones and
// repeats dropped) notify those users; never list the bot itself. `markdown` should be one
// part of split_message: nothing here cuts it.
std::string text_content(std::string_view markdown, const reply_target* reply,
                         const std::vector<std::string>& mention_user_ids);

// The same as `m.notice`: the bot's own system messages ("this room is encrypted, I cannot
// read it"). Clients show notices differently and bots never answer them.
std::string notice_content(std::string_view markdown, const reply_target* reply,
                           const std::vector<std::string>& mention_user_ids);

enum class text_kind { text, notice };

// A whole reply as the contents to send in order (none for blank text): split_message,
// then one content per part. The first part answers `reply` and mentions `mention_user_ids`; the rest mention
// nobody (one notification per reply) and, in a thread, stay in it (falling back to a
// reply to `reply->event_id`). A part whose content would still exceed
// `max_content_bytes` without HTML (text that JSON escaping inflates, such as quotes or
// control characters) is split again, smaller.
std::vector<std::string> text_contents(std::string_view markdown, const reply_target* reply,
                                       const std::vector<std::string>& mention_user_ids,
                                       text_kind kind = text_kind::text,
                                       std::size_t max_bytes = max_body_bytes);

// `m.image` for image/*, `m.audio` for audio/*, `m.video` for video/*, else `m.file`
// (the type and subtype are case-insensitive; parameters such as "; charset=" ignored).
std::string_view msgtype_for_mimetype(std::string_view mimetype);

// A file uploaded to `mxc_uri`: {"msgtype":...,"body":filename,"filename":filename,
// "url":mxc_uri,"info":{"mimetype":...,"size":...},"m.mentions":{}}. `msgtype` empty:
// chosen from the mimetype. An empty filename becomes "file"; an empty mimetype is left out
// of `info`. With a `reply`, the file answers it as text_content does.
std::string file_content(std::string_view mxc_uri, std::string_view filename, std::string_view mimetype,
                         std::uint64_t size, std::string_view msgtype = {},
                         const reply_target* reply = nullptr);

// An `m.reaction`: {"m.relates_to":{"rel_type":"m.annotation","event_id":...,"key":...}}.
std::string reaction_content(std::string_view event_id, std::string_view key);

// ---- Buttons ----

// `text`, a blank line, and the labels as a numbered list ("1. Yes\n2. No"); a newline in a
// label becomes a space. When `text` itself ends with a "1." list, the labels are numbered
// "1)" so that CommonMark starts a new list rather than continuing its numbering.
std::string buttons_text(std::string_view text, const std::vector<std::string>& labels);

// Which label (0-based) a reply picks: its number ("2", " 2. ", "2)"), its label
// (trimmed, ASCII case-insensitive: "yes" picks "Yes"), or both ("2. No"). A number in
// range wins over a label that reads like a number. A reply fallback ("> " lines at the
// start, sent by clients older than spec v1.13) is ignored. nullopt for anything else.
std::optional<std::size_t> button_choice(std::string_view reply_body, const std::vector<std::string>& labels);

// ---- Request bodies ----

// PUT /rooms/{roomId}/typing/{userId}: {"typing":true,"timeout":30000}, or
// {"typing":false} (the timeout then means nothing and is left out).
std::string typing_body(bool typing, std::chrono::milliseconds timeout);

// PUT /presence/{userId}/status: {"presence":"online","status_msg":...}. An empty message
// is sent too: it clears the status.
std::string presence_body(std::string_view status_msg);

// POST /rooms/{roomId}/receipt/m.read/{eventId}: "{}" (an unthreaded receipt).
std::string receipt_body();

}  // namespace stargazer::platform::matrix
