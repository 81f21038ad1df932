// What a Matrix homeserver answers to /sync (platform/matrix/sync_events.hpp): any bytes
// through decode_sync never crash (also as one event's content, nested however deep), and
// what it decodes keeps its promises (ids with their sigils, every string UTF-8, media with
// mxc:// URIs, reactions with a target and a key, each event once per room, one deep event
// never costs the others); the rules run on everything decoded. The same bytes also
// check the allow-list glob against a reference matcher, the reply-fallback stripper and
// the transaction ids.

#include "stargazer/core/utf8.hpp"
#include "stargazer/platform/matrix/sync_events.hpp"

#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace matrix = stargazer::platform::matrix;

namespace {

constexpr std::string_view bot = "@bot:example.org";

bool id_with(std::string_view id, char sigil) {
  return id.size() >= 2 && id.size() <= 255 && id.front() == sigil && stargazer::utf8::is_valid(id);
}

// The reference glob: dynamic programming over (pattern prefix, text prefix).
bool reference_glob(std::string_view p, std::string_view t) {
  std::vector<std::vector<char>> m(p.size() + 1, std::vector<char>(t.size() + 1, 0));
  m[0][0] = 1;
  for (std::size_t i = 1; i <= p.size(); ++i) {
    for (std::size_t j = 0; j <= t.size(); ++j) {
      if (p[i - 1] == '*')
        m[i][j] = m[i - 1][j] || (j > 0 && m[i][j - 1]);
      else if (j > 0)
        m[i][j] = m[i - 1][j - 1] && (p[i - 1] == '?' || p[i - 1] == t[j - 1]);
    }
  }
  return m[p.size()][t.size()] != 0;
}

void check_message(const matrix::message_event& m) {
  FUZZ_CHECK(id_with(m.event_id, '$'));
  FUZZ_CHECK(id_with(m.sender, '@'));
  FUZZ_CHECK(stargazer::utf8::is_valid(m.msgtype) && stargazer::utf8::is_valid(m.body) && stargazer::utf8::is_valid(m.format) && stargazer::utf8::is_valid(m.formatted_body));
  FUZZ_CHECK(m.reply_to.empty() || id_with(m.reply_to, '$'));
  FUZZ_CHECK(m.thread_root.empty() || id_with(m.thread_root, '$'));
  for (const auto& id : m.mentioned_user_ids) FUZZ_CHECK(stargazer::utf8::is_valid(id));
  if (m.media) {
    FUZZ_CHECK(matrix::parse_mxc(m.media->url).has_value());
    FUZZ_CHECK(stargazer::utf8::is_valid(m.media->filename) && stargazer::utf8::is_valid(m.media->mimetype));
    FUZZ_CHECK(!m.media->size || *m.media->size >= 0);
  }
  if (m.edit) {
    FUZZ_CHECK(id_with(m.edit->replaces_event_id, '$'));
    FUZZ_CHECK(stargazer::utf8::is_valid(m.edit->body) && stargazer::utf8::is_valid(m.edit->msgtype) && stargazer::utf8::is_valid(m.edit->formatted_body));
  }
  // The rules: the bot's own message is always ignored; the others run without failing.
  FUZZ_CHECK(matrix::should_ignore(m, m.sender).has_value());
  (void)matrix::should_ignore(m, bot);
  const std::string bot_id(bot);
  FUZZ_CHECK(matrix::is_addressed(m, bot, "Star", 2, nullptr));
  (void)matrix::is_addressed(m, bot, "Star", 7, &bot_id);
  (void)matrix::is_addressed(m, bot, m.body, 7, &m.sender);
}

void check_batch(const matrix::sync_batch& b) {
  FUZZ_CHECK(!b.next_batch.empty() && stargazer::utf8::is_valid(b.next_batch));
  std::set<std::string> joined;
  for (const auto& room : b.joined) {
    FUZZ_CHECK(id_with(room.room_id, '!'));
    FUZZ_CHECK(joined.insert(room.room_id).second);
    FUZZ_CHECK(stargazer::utf8::is_valid(room.prev_batch));
    FUZZ_CHECK(!room.name || stargazer::utf8::is_valid(*room.name));
    FUZZ_CHECK(!room.joined_member_count || *room.joined_member_count >= 0);
    for (const auto& [user, info] : room.members) {
      FUZZ_CHECK(id_with(user, '@'));
      FUZZ_CHECK(stargazer::utf8::is_valid(info.membership));
      FUZZ_CHECK(!info.displayname || stargazer::utf8::is_valid(*info.displayname));
    }
    if (room.power)
      for (const auto& [user, level] : room.power->users) FUZZ_CHECK(matrix::power_level_of(*room.power, user) == level);
    std::set<std::string> ids;
    for (const auto& ev : room.events) {
      if (const auto* m = std::get_if<matrix::message_event>(&ev)) {
        check_message(*m);
        FUZZ_CHECK(ids.insert(m->event_id).second);
      } else {
        const auto& r = std::get<matrix::reaction_event>(ev);
        FUZZ_CHECK(id_with(r.event_id, '$'));
        FUZZ_CHECK(id_with(r.sender, '@'));
        FUZZ_CHECK(id_with(r.target_event_id, '$'));
        FUZZ_CHECK(!r.key.empty() && stargazer::utf8::is_valid(r.key));
        FUZZ_CHECK(ids.insert(r.event_id).second);
      }
      FUZZ_CHECK(matrix::is_from_bot(ev, bot) == (std::visit([](const auto& e) { return e.sender; }, ev) == bot));
    }
  }
  std::set<std::string> invited;
  for (const auto& room : b.invited) {
    FUZZ_CHECK(id_with(room.room_id, '!'));
    FUZZ_CHECK(invited.insert(room.room_id).second);
    FUZZ_CHECK(room.inviter.empty() || id_with(room.inviter, '@'));
    FUZZ_CHECK(stargazer::utf8::is_valid(room.name));
    const auto d = matrix::should_join(matrix::auto_join::all, room.inviter, {}, room.encrypted);
    FUZZ_CHECK(d.join == !room.encrypted);
  }
  std::set<std::string> left;
  for (const auto& id : b.left) {
    FUZZ_CHECK(id_with(id, '!'));
    FUZZ_CHECK(left.insert(id).second);
  }
  for (const auto& s : b.skipped) {
    FUZZ_CHECK(!s.reason.empty());
    FUZZ_CHECK(stargazer::utf8::is_valid(s.room_id) && stargazer::utf8::is_valid(s.event_id) && stargazer::utf8::is_valid(s.type));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // Any bytes as a /sync response.
  auto r = matrix::decode_sync(text, bot);
  if (const auto* batch = std::get_if<matrix::sync_batch>(&r))
    check_batch(*batch);
  else
    FUZZ_CHECK(!std::get<std::string>(r).empty());

  // The same bytes as one timeline event's content, after a plain message: however the
  // content nests (the body is parsed iteratively, events are measured without recursion),
  // the batch is refused only when it is not JSON (or absurdly deep), and the plain message
  // is decoded. (The bytes may close the event early and add members; RapidJSON's
  // FindMember takes the first of repeated keys, so the room and its first event stay ours.)
  if (size <= 64 * 1024) {
    const auto plain = [](const char* id) {
      return std::string(R"({"type":"m.room.message","event_id":")") + id +
             R"(","sender":"@a:example.org","origin_server_ts":1,"content":{"msgtype":"m.text","body":"x"}})";
    };
    const auto wrapped = std::string(R"({"next_batch":"s1","rooms":{"join":{"!r:example.org":{"timeline":{"events":[)") +
                         plain("$a") + R"(,{"type":"m.room.message","event_id":"$b","sender":"@a:example.org",)"
                         R"("origin_server_ts":1,"content":)" + std::string(text) + "}," + plain("$c") + "]}}}}}";
    auto w = matrix::decode_sync(wrapped, bot);
    if (const auto* batch = std::get_if<matrix::sync_batch>(&w)) {
      check_batch(*batch);
      FUZZ_CHECK(!batch->joined.empty() && batch->joined[0].room_id == "!r:example.org");
      FUZZ_CHECK(!batch->joined[0].events.empty() && matrix::is_from_bot(batch->joined[0].events[0], "@a:example.org"));
    } else {
      FUZZ_CHECK(std::get<std::string>(w).find("not JSON") != std::string::npos ||
                 std::get<std::string>(w).find("nests deeper") != std::string::npos);
    }
  }

  // The same bytes as power levels content.
  if (const auto p = matrix::parse_power_levels(text)) (void)matrix::power_level_of(*p, bot);

  // The allow-list glob agrees with the reference (short inputs: the reference is quadratic).
  if (size <= 512) {
    const auto half = size / 2;
    const auto pattern = text.substr(0, half), user = text.substr(half);
    FUZZ_CHECK(matrix::user_allowed(user, {std::string(pattern)}) == reference_glob(pattern, user));
  }

  // The reply fallback strippers only cut a prefix.
  const auto stripped = matrix::strip_reply_fallback(text);
  FUZZ_CHECK(stripped.size() <= text.size() && text.substr(text.size() - stripped.size()) == stripped);
  const auto stripped_html = matrix::strip_reply_fallback_html(text);
  FUZZ_CHECK(stripped_html.size() <= text.size() && text.substr(text.size() - stripped_html.size()) == stripped_html);

  // Transaction ids: 64 lowercase hex characters, the same for the same input.
  const auto txn = matrix::txn_id_for(text, static_cast<int>(size % 7));
  FUZZ_CHECK(txn.size() == 64 && txn.find_first_not_of("0123456789abcdef") == std::string::npos);
  FUZZ_CHECK(txn == matrix::txn_id_for(text, static_cast<int>(size % 7)));
  return 0;
}
