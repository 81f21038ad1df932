// Matrix's pure pieces (platform/matrix/sync_events.hpp): /sync decoding and the rules the
// adapter applies to what it decodes. The JSON shapes follow the Client-Server API's
// examples (matrix-org/matrix-spec data/api/client-server/sync.yaml and the modules).

#include "stargazer/platform/matrix/sync_events.hpp"

#include "stargazer/core/json_value.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <variant>

using namespace stargazer::platform::matrix;

namespace {

constexpr std::string_view bot = "@bot:example.org";

sync_batch decode_ok(std::string_view body) {
  auto r = decode_sync(body, bot);
  if (auto* error = std::get_if<std::string>(&r)) FAIL("decode_sync failed: " << *error);
  return std::get<sync_batch>(std::move(r));
}

std::string decode_error(std::string_view body) {
  auto r = decode_sync(body, bot);
  if (std::holds_alternative<sync_batch>(r)) FAIL("decode_sync accepted: " << body);
  return std::get<std::string>(r);
}

// A sync with one joined room `!room:example.org` whose timeline holds `events` (JSON array items).
std::string one_room(std::string_view events, std::string_view extra = "") {
  return std::string(R"({"next_batch":"s2_0","rooms":{"join":{"!room:example.org":{)") + std::string(extra) +
         R"("timeline":{"events":[)" + std::string(events) + R"(],"limited":false,"prev_batch":"t1_0"}}}}})";
}

// An m.room.message event from @alice with `content` (a JSON object).
std::string message(std::string_view id, std::string_view content, std::string_view sender = "@alice:example.org") {
  return R"({"type":"m.room.message","event_id":")" + std::string(id) + R"(","sender":")" + std::string(sender) +
         R"(","origin_server_ts":1432735824653,"content":)" + std::string(content) + "}";
}

const message_event& msg(const joined_room& room, std::size_t i) {
  REQUIRE(i < room.events.size());
  REQUIRE(std::holds_alternative<message_event>(room.events[i]));
  return std::get<message_event>(room.events[i]);
}

const reaction_event& reaction(const joined_room& room, std::size_t i) {
  REQUIRE(i < room.events.size());
  REQUIRE(std::holds_alternative<reaction_event>(room.events[i]));
  return std::get<reaction_event>(room.events[i]);
}

bool skipped_with(const sync_batch& b, std::string_view event_id, std::string_view reason_part) {
  for (const auto& s : b.skipped)
    if (s.event_id == event_id && s.reason.find(reason_part) != std::string::npos) return true;
  return false;
}

message_event text_message(std::string body, std::string sender = "@alice:example.org") {
  message_event m;
  m.event_id = "$e1";
  m.sender = std::move(sender);
  m.msgtype = "m.text";
  m.body = std::move(body);
  return m;
}

}  // namespace

// ---- decoding ----------------------------------------------------------------------------

TEST_CASE("a realistic /sync response decodes into rooms, members, messages, invites and leaves", "[matrix]") {
  // sync.yaml's example response, with the bot as the invitee, a second joined room listed
  // first (the order given is kept), and a left room.
  const auto body = R"({
    "next_batch": "s72595_4483_1934",
    "presence": {"events": [{"content": {"avatar_url": "mxc://localhost/wefuiwegh8742w", "currently_active": false,
                  "last_active_ago": 2478593, "presence": "online", "status_msg": "Making cupcakes"},
                  "sender": "@example:localhost", "type": "m.presence"}]},
    "account_data": {"events": [{"type": "org.example.custom.config", "content": {"custom_config_key": "custom_config_value"}}]},
    "rooms": {
      "join": {
        "!zzz:example.org": {
          "timeline": {"events": [], "limited": false, "prev_batch": "t1-1_0_0"}
        },
        "!726s6s6q:example.com": {
          "summary": {"m.heroes": ["@alice:example.com", "@bob:example.com"], "m.joined_member_count": 2,
                      "m.invited_member_count": 0},
          "state": {"events": [
            {"content": {"avatar_url": "mxc://example.org/SFHyPlCeYUSFFxlgbQYZmoEoe", "displayname": "Example user",
                         "membership": "join"},
             "event_id": "$143273976499sgjks:example.org", "origin_server_ts": 1432735824653,
             "sender": "@example:example.org", "state_key": "@example:example.org", "type": "m.room.member",
             "unsigned": {"age": 45603, "membership": "join"}},
            {"content": {"name": "Cupcake club"}, "event_id": "$name:example.org", "origin_server_ts": 1432735824000,
             "sender": "@example:example.org", "state_key": "", "type": "m.room.name"}
          ]},
          "timeline": {
            "events": [
              {"content": {"avatar_url": "mxc://example.org/SEsfnsuifSDFSSEF", "displayname": "Alice Margatroid",
                           "membership": "join", "reason": "Looking for support"},
               "event_id": "$143273582443PhrSn:example.org", "origin_server_ts": 1432735824653,
               "sender": "@alice:example.org", "state_key": "@alice:example.org", "type": "m.room.member",
               "unsigned": {"age": 1234, "membership": "join"}},
              {"content": {"body": "This is an example text message", "format": "org.matrix.custom.html",
                           "formatted_body": "<b>This is an example text message</b>", "msgtype": "m.text"},
               "event_id": "$143273582443PhrSm:example.org", "origin_server_ts": 1432735824654,
               "sender": "@example:example.org", "type": "m.room.message",
               "unsigned": {"age": 1234, "membership": "join"}},
              {"content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$143273582443PhrSm:example.org",
                                            "key": "👍"}},
               "event_id": "$reaction:example.org", "origin_server_ts": 1432735824655,
               "sender": "@alice:example.org", "type": "m.reaction"}
            ],
            "limited": true,
            "prev_batch": "t34-23535_0_0"
          },
          "ephemeral": {"events": [{"content": {"user_ids": ["@alice:matrix.org"]}, "type": "m.typing"}]},
          "account_data": {"events": [{"content": {"tags": {"u.work": {"order": 0.9}}}, "type": "m.tag"}]},
          "unread_notifications": {"highlight_count": 1, "notification_count": 5},
          "unread_thread_notifications": {"$threadroot": {"highlight_count": 3, "notification_count": 6}}
        }
      },
      "invite": {
        "!696r7674:example.com": {
          "invite_state": {"events": [
            {"sender": "@alice:example.com", "type": "m.room.name", "state_key": "", "content": {"name": "My Room Name"}},
            {"sender": "@alice:example.com", "type": "m.room.member", "state_key": "@bot:example.org",
             "content": {"membership": "invite"}}
          ]}
        }
      },
      "knock": {
        "!223asd456:example.com": {"knock_state": {"events": [
          {"sender": "@bob:example.com", "type": "m.room.member", "state_key": "@bob:example.com",
           "content": {"membership": "knock"}}]}}
      },
      "leave": {"!gone:example.org": {"timeline": {"events": []}}}
    },
    "device_one_time_keys_count": {"signed_curve25519": 0}
  })";
  const auto b = decode_ok(body);
  CHECK(b.next_batch == "s72595_4483_1934");
  CHECK(b.skipped.empty());
  REQUIRE(b.joined.size() == 2);
  CHECK(b.joined[0].room_id == "!zzz:example.org");
  CHECK(b.joined[0].events.empty());
  CHECK_FALSE(b.joined[0].joined_member_count);

  const auto& room = b.joined[1];
  CHECK(room.room_id == "!726s6s6q:example.com");
  CHECK(room.limited);
  CHECK(room.prev_batch == "t34-23535_0_0");
  CHECK(room.joined_member_count == 2);
  CHECK_FALSE(room.encrypted);
  CHECK(room.name == "Cupcake club");
  CHECK_FALSE(room.power);
  REQUIRE(room.members.size() == 2);
  CHECK(room.members.at("@example:example.org").membership == "join");
  CHECK(room.members.at("@example:example.org").displayname == "Example user");
  CHECK(room.members.at("@alice:example.org").displayname == "Alice Margatroid");

  REQUIRE(room.events.size() == 2);
  const auto& m = msg(room, 0);
  CHECK(m.event_id == "$143273582443PhrSm:example.org");
  CHECK(m.sender == "@example:example.org");
  CHECK(m.origin_server_ts == 1432735824654);
  CHECK(m.msgtype == "m.text");
  CHECK(m.body == "This is an example text message");
  CHECK(m.format == "org.matrix.custom.html");
  CHECK(m.formatted_body == "<b>This is an example text message</b>");
  CHECK_FALSE(m.media);
  CHECK(m.reply_to.empty());
  CHECK_FALSE(m.is_edit());
  const auto& r = reaction(room, 1);
  CHECK(r.target_event_id == "$143273582443PhrSm:example.org");
  CHECK(r.key == "👍");
  CHECK(r.sender == "@alice:example.org");

  REQUIRE(b.invited.size() == 1);
  CHECK(b.invited[0].room_id == "!696r7674:example.com");
  CHECK(b.invited[0].inviter == "@alice:example.com");
  CHECK(b.invited[0].name == "My Room Name");
  CHECK_FALSE(b.invited[0].is_direct);
  CHECK_FALSE(b.invited[0].encrypted);
  CHECK(b.left == std::vector<std::string>{"!gone:example.org"});
}

TEST_CASE("an empty long-poll answer is a batch with nothing in it", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s9_0","device_one_time_keys_count":{"signed_curve25519":0}})");
  CHECK(b.next_batch == "s9_0");
  CHECK(b.joined.empty());
  CHECK(b.invited.empty());
  CHECK(b.left.empty());
  CHECK(b.skipped.empty());
  // Empty sections and nulls are the same as absent ones.
  CHECK(decode_ok(R"({"next_batch":"s","rooms":{"join":{},"invite":null,"leave":{}}})").joined.empty());
  CHECK(decode_ok(R"({"next_batch":"s","rooms":null})").joined.empty());
}

TEST_CASE("every message kind decodes", "[matrix]") {
  const auto b = decode_ok(one_room(
      message("$text", R"({"msgtype":"m.text","body":"hello"})") + "," +
      message("$emote", R"({"msgtype":"m.emote","body":"waves"})") + "," +
      message("$notice", R"({"msgtype":"m.notice","body":"build passed"})") + "," +
      message("$image", R"({"msgtype":"m.image","body":"look at this","filename":"cat.png",
                            "url":"mxc://example.org/AbC_d-1","info":{"size":31037,"mimetype":"image/png","w":394,"h":398}})") +
      "," +
      message("$file", R"({"msgtype":"m.file","body":"report.pdf","url":"mxc://example.org/file1",
                           "info":{"size":1024,"mimetype":"application/pdf"}})") +
      "," +
      message("$audio", R"({"msgtype":"m.audio","body":"voice.ogg","filename":"voice.ogg",
                            "url":"mxc://example.org:8448/aud","info":{"duration":2140,"mimetype":"audio/ogg"}})") +
      "," +
      message("$video", R"({"msgtype":"m.video","body":"clip.mp4","url":"mxc://[::1]/vid",
                            "info":{"size":"big","mimetype":7}})") +
      "," + message("$loc", R"({"msgtype":"m.location","body":"Big Ben, London, UK","geo_uri":"geo:51.5008,0.1247"})")));
  REQUIRE(b.skipped.empty());
  const auto& room = b.joined.at(0);
  REQUIRE(room.events.size() == 8);

  CHECK(msg(room, 0).msgtype == "m.text");
  CHECK(msg(room, 0).body == "hello");
  CHECK(msg(room, 1).msgtype == "m.emote");
  CHECK(msg(room, 1).body == "waves");
  CHECK(msg(room, 2).msgtype == "m.notice");
  CHECK(msg(room, 2).body == "build passed");

  const auto& image = msg(room, 3);
  REQUIRE(image.media);
  CHECK(image.media->url == "mxc://example.org/AbC_d-1");
  CHECK(image.media->filename == "cat.png");
  CHECK(image.media->size == 31037);
  CHECK(image.media->mimetype == "image/png");
  CHECK(image.body == "look at this");  // body differs from filename: a caption

  const auto& file = msg(room, 4);
  REQUIRE(file.media);
  CHECK(file.media->filename == "report.pdf");  // no filename: body is the filename
  CHECK(file.body.empty());                     // and no caption
  CHECK(file.media->size == 1024);
  CHECK(file.media->mimetype == "application/pdf");

  const auto& audio = msg(room, 5);
  REQUIRE(audio.media);
  CHECK(audio.media->filename == "voice.ogg");
  CHECK(audio.body.empty());  // body equal to filename: not a caption
  CHECK_FALSE(audio.media->size);
  CHECK(audio.media->mimetype == "audio/ogg");

  const auto& video = msg(room, 6);
  REQUIRE(video.media);
  CHECK(video.media->url == "mxc://[::1]/vid");
  CHECK_FALSE(video.media->size);       // wrong type: absent
  CHECK(video.media->mimetype.empty());  // wrong type: absent

  CHECK(msg(room, 7).msgtype == "m.location");  // unknown to the bot: the body is the fallback text
  CHECK(msg(room, 7).body == "Big Ben, London, UK");
  CHECK_FALSE(msg(room, 7).media);
}

TEST_CASE("edits carry the edited event and the new text", "[matrix]") {
  const auto b = decode_ok(one_room(
      message("$edit", R"({"msgtype":"m.text","body":"* Hello! My name is bar",
                           "m.new_content":{"body":"Hello! My name is bar","msgtype":"m.text","formatted_body":"<i>bar</i>"},
                           "m.relates_to":{"rel_type":"m.replace","event_id":"$some_event_id"}})") +
      "," +
      message("$no_new", R"({"msgtype":"m.text","body":"* oops","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}})") +
      "," +
      message("$no_body", R"({"msgtype":"m.text","body":"* oops","m.new_content":{"msgtype":"m.text"},
                              "m.relates_to":{"rel_type":"m.replace","event_id":"$x"}})") +
      "," +
      message("$no_target", R"({"msgtype":"m.text","body":"* oops","m.new_content":{"body":"x","msgtype":"m.text"},
                                "m.relates_to":{"rel_type":"m.replace"}})")));
  const auto& room = b.joined.at(0);
  REQUIRE(room.events.size() == 1);
  const auto& e = msg(room, 0);
  REQUIRE(e.is_edit());
  CHECK(e.edit->replaces_event_id == "$some_event_id");
  CHECK(e.edit->body == "Hello! My name is bar");
  CHECK(e.edit->msgtype == "m.text");
  CHECK(e.edit->formatted_body == "<i>bar</i>");
  CHECK(e.body == "* Hello! My name is bar");  // the fallback stays the event's own body
  CHECK(should_ignore(e, bot) == "an edit, not a new turn");

  CHECK(skipped_with(b, "$no_new", "without an 'm.new_content'"));
  CHECK(skipped_with(b, "$no_body", "m.new_content: no 'body'"));
  CHECK(skipped_with(b, "$no_target", "no 'event_id'"));
}

TEST_CASE("replies name the replied-to event, without the fallback quote", "[matrix]") {
  const auto b = decode_ok(one_room(
      message("$reply", R"({"msgtype":"m.text",
          "body":"> <@bot:example.org> I am the bot, ask me anything\n> second line\n\nThat sounds like a great idea!",
          "format":"org.matrix.custom.html",
          "formatted_body":"<mx-reply><blockquote>In reply to bot</blockquote></mx-reply>That sounds like a <b>great</b> idea!",
          "m.relates_to":{"m.in_reply_to":{"event_id":"$another_event"}}})") +
      "," + message("$modern", R"({"msgtype":"m.text","body":"Yes","m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}})") +
      "," + message("$quote", R"({"msgtype":"m.text","body":"> not a reply, a quote\n\nmine"})") + "," +
      message("$thread", R"({"msgtype":"m.text","body":"in a thread",
          "m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$last"}}})") +
      "," +
      message("$thread_reply", R"({"msgtype":"m.text","body":"a real reply in a thread",
          "m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":false,"m.in_reply_to":{"event_id":"$last"}}})") +
      "," + message("$bad_target", R"({"msgtype":"m.text","body":"hm","m.relates_to":{"m.in_reply_to":{"event_id":5}}})")));
  REQUIRE(b.skipped.empty());
  const auto& room = b.joined.at(0);
  REQUIRE(room.events.size() == 6);
  CHECK(msg(room, 0).reply_to == "$another_event");
  CHECK(msg(room, 0).body == "That sounds like a great idea!");
  CHECK(msg(room, 0).formatted_body == "That sounds like a <b>great</b> idea!");
  CHECK(msg(room, 1).reply_to == "$q");
  CHECK(msg(room, 1).body == "Yes");
  CHECK(msg(room, 2).reply_to.empty());
  CHECK(msg(room, 2).body == "> not a reply, a quote\n\nmine");  // only replies lose their quote
  CHECK(msg(room, 3).thread_root == "$root");
  CHECK(msg(room, 3).reply_to.empty());  // a thread's fallback reply is not a reply
  CHECK(msg(room, 4).thread_root == "$root");
  CHECK(msg(room, 4).reply_to == "$last");
  CHECK(msg(room, 5).reply_to.empty());  // an unusable target: not a reply, the message stays
}

TEST_CASE("the reply fallback strippers", "[matrix]") {
  CHECK(strip_reply_fallback("> <@a:b> hi\n\nreply") == "reply");
  CHECK(strip_reply_fallback("> <@a:b> hi\nreply") == "reply");
  CHECK(strip_reply_fallback("> only a quote") == "");
  CHECK(strip_reply_fallback("plain\n> later quote") == "plain\n> later quote");
  CHECK(strip_reply_fallback(">no space") == ">no space");
  CHECK(strip_reply_fallback("") == "");
  CHECK(strip_reply_fallback_html("<mx-reply>q</mx-reply>a") == "a");
  CHECK(strip_reply_fallback_html("<mx-reply>unterminated") == "<mx-reply>unterminated");
  CHECK(strip_reply_fallback_html("a<mx-reply>q</mx-reply>") == "a<mx-reply>q</mx-reply>");
}

TEST_CASE("mentions are read from m.mentions", "[matrix]") {
  const auto b = decode_ok(one_room(
      message("$m1", R"({"msgtype":"m.text","body":"Hello Bot!","m.mentions":{"user_ids":["@bot:example.org",7,"@carol:example.org"]}})") +
      "," + message("$m2", R"({"msgtype":"m.text","body":"everyone!","m.mentions":{"room":true}})") + "," +
      message("$m3", R"({"msgtype":"m.text","body":"x","m.mentions":{"user_ids":"@bot:example.org","room":"yes"}})") + "," +
      message("$m4", R"({"msgtype":"m.text","body":"x","m.mentions":[]})")));
  REQUIRE(b.skipped.empty());
  const auto& room = b.joined.at(0);
  CHECK(msg(room, 0).mentioned_user_ids == std::vector<std::string>{"@bot:example.org", "@carol:example.org"});
  CHECK_FALSE(msg(room, 0).mentions_room);
  CHECK(msg(room, 1).mentions_room);
  CHECK(msg(room, 1).mentioned_user_ids.empty());
  CHECK(msg(room, 2).mentioned_user_ids.empty());  // wrong types: absent
  CHECK_FALSE(msg(room, 2).mentions_room);
  CHECK(msg(room, 3).mentioned_user_ids.empty());
}

TEST_CASE("reactions need an m.annotation with a target and a key", "[matrix]") {
  const auto react = [](std::string_view id, std::string_view content) {
    return R"({"type":"m.reaction","event_id":")" + std::string(id) +
           R"(","sender":"@alice:example.org","origin_server_ts":5,"content":)" + std::string(content) + "}";
  };
  const auto b = decode_ok(one_room(
      react("$ok", R"({"m.relates_to":{"rel_type":"m.annotation","event_id":"$target","key":"❤️"}})") + "," +
      react("$ref", R"({"m.relates_to":{"rel_type":"m.reference","event_id":"$target","key":"x"}})") + "," +
      react("$nokey", R"({"m.relates_to":{"rel_type":"m.annotation","event_id":"$target"}})") + "," +
      react("$emptykey", R"({"m.relates_to":{"rel_type":"m.annotation","event_id":"$target","key":""}})") + "," +
      react("$notarget", R"({"m.relates_to":{"rel_type":"m.annotation","key":"x"}})") + "," + react("$norel", "{}") +
      "," +
      R"({"type":"m.reaction","event_id":"$redacted","sender":"@alice:example.org","origin_server_ts":5,"content":{},
          "unsigned":{"redacted_because":{"type":"m.room.redaction"}}})"));
  const auto& room = b.joined.at(0);
  REQUIRE(room.events.size() == 1);
  CHECK(reaction(room, 0).event_id == "$ok");
  CHECK(reaction(room, 0).target_event_id == "$target");
  CHECK(reaction(room, 0).key == "❤️");
  CHECK(reaction(room, 0).origin_server_ts == 5);
  CHECK(skipped_with(b, "$ref", "not m.annotation"));
  CHECK(skipped_with(b, "$nokey", "no 'key'"));
  CHECK(skipped_with(b, "$emptykey", "key is empty"));
  CHECK(skipped_with(b, "$notarget", "no 'event_id'"));
  CHECK(skipped_with(b, "$norel", "no 'm.relates_to'"));
  CHECK(skipped_with(b, "$redacted", "redacted"));
  for (const auto& s : b.skipped) CHECK(s.type == "m.reaction");
}

TEST_CASE("invites: the inviter, direct chats, encryption, the room name", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s1","rooms":{"invite":{
    "!dm:example.org":{"invite_state":{"events":[
      {"type":"m.room.create","state_key":"","sender":"@alice:example.org","content":{"room_version":"10"}},
      {"type":"m.room.member","state_key":"@alice:example.org","sender":"@alice:example.org","content":{"membership":"join"}},
      {"type":"m.room.member","state_key":"@bot:example.org","sender":"@alice:example.org",
       "content":{"membership":"invite","is_direct":true}}]}},
    "!secret:example.org":{"invite_state":{"events":[
      {"type":"m.room.encryption","state_key":"","sender":"@carol:example.org","content":{"algorithm":"m.megolm.v1.aes-sha2"}},
      {"type":"m.room.name","state_key":"","sender":"@carol:example.org","content":{"name":"Secrets"}},
      {"type":"m.room.member","state_key":"@bot:example.org","sender":"@carol:example.org","content":{"membership":"invite"}}]}},
    "!other:example.org":{"invite_state":{"events":[
      {"type":"m.room.member","state_key":"@dave:example.org","sender":"@carol:example.org","content":{"membership":"invite"}}]}},
    "!bad:example.org":{"invite_state":{"events":[
      "nonsense",
      {"type":"m.room.member","state_key":"@bot:example.org","sender":42,"content":{"membership":"invite"}}]}},
    "!empty:example.org":{}
  }}})");
  REQUIRE(b.invited.size() == 5);
  CHECK(b.invited[0].room_id == "!dm:example.org");
  CHECK(b.invited[0].inviter == "@alice:example.org");
  CHECK(b.invited[0].is_direct);
  CHECK_FALSE(b.invited[0].encrypted);
  CHECK(b.invited[0].name.empty());

  CHECK(b.invited[1].inviter == "@carol:example.org");
  CHECK(b.invited[1].encrypted);
  CHECK_FALSE(b.invited[1].is_direct);
  CHECK(b.invited[1].name == "Secrets");

  CHECK(b.invited[2].inviter.empty());  // the invite is for someone else
  CHECK(b.invited[3].inviter.empty());
  CHECK(b.invited[4].inviter.empty());
  CHECK(b.skipped.size() == 2);
  for (const auto& s : b.skipped) CHECK(s.room_id == "!bad:example.org");
}

TEST_CASE("left rooms are listed by id", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s1","rooms":{"leave":{
    "!a:example.org":{"timeline":{"events":[{"type":"m.room.member","state_key":"@bot:example.org",
      "sender":"@mod:example.org","event_id":"$kick","origin_server_ts":1,"content":{"membership":"leave","reason":"spam"}}]}},
    "!b:example.org":{}, "not-a-room":{}}}})");
  CHECK(b.left == std::vector<std::string>{"!a:example.org", "!b:example.org"});
  REQUIRE(b.skipped.size() == 1);
  CHECK(b.skipped[0].reason.find("not a room id") != std::string::npos);
}

TEST_CASE("limited timelines keep limited and prev_batch", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s5","rooms":{"join":{
    "!a:example.org":{"timeline":{"events":[],"limited":true,"prev_batch":"t3_0"}},
    "!b:example.org":{"timeline":{"events":[],"limited":"yes","prev_batch":3}},
    "!c:example.org":{"state":{"events":[]}}}}})");
  REQUIRE(b.joined.size() == 3);
  CHECK(b.joined[0].limited);
  CHECK(b.joined[0].prev_batch == "t3_0");
  CHECK_FALSE(b.joined[1].limited);  // wrong types: absent
  CHECK(b.joined[1].prev_batch.empty());
  CHECK_FALSE(b.joined[2].limited);
}

TEST_CASE("membership, encryption, names and power levels come from state and timeline", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s5","rooms":{"join":{"!a:example.org":{
    "summary":{"m.joined_member_count":3},
    "state":{"events":[
      {"type":"m.room.member","state_key":"@alice:example.org","sender":"@alice:example.org","event_id":"$1",
       "origin_server_ts":1,"content":{"membership":"join","displayname":"Alice"}},
      {"type":"m.room.member","state_key":"@bob:example.org","sender":"@bob:example.org","event_id":"$2",
       "origin_server_ts":1,"content":{"membership":"join","displayname":null}},
      {"type":"m.room.power_levels","state_key":"","sender":"@alice:example.org","event_id":"$3","origin_server_ts":1,
       "content":{"users":{"@alice:example.org":100},"users_default":0,"ban":50}},
      {"type":"m.room.name","state_key":"","sender":"@alice:example.org","event_id":"$4","origin_server_ts":1,
       "content":{"name":"Old name"}}]},
    "timeline":{"events":[
      {"type":"m.room.member","state_key":"@bob:example.org","sender":"@alice:example.org","event_id":"$5",
       "origin_server_ts":2,"content":{"membership":"ban","reason":"spam"}},
      {"type":"m.room.encryption","state_key":"","sender":"@alice:example.org","event_id":"$6","origin_server_ts":3,
       "content":{"algorithm":"m.megolm.v1.aes-sha2"}},
      {"type":"m.room.name","state_key":"","sender":"@alice:example.org","event_id":"$7","origin_server_ts":4,"content":{}},
      {"type":"m.room.power_levels","state_key":"","sender":"@alice:example.org","event_id":"$8","origin_server_ts":5,
       "content":{"users":{"@alice:example.org":100,"@carol:example.org":"50","@dave:example.org":true},"users_default":10}},
      {"type":"m.room.encrypted","sender":"@alice:example.org","event_id":"$9","origin_server_ts":6,
       "content":{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgAEn..."}}],
     "limited":false}}}}})");
  const auto& room = b.joined.at(0);
  CHECK(room.joined_member_count == 3);
  CHECK(room.members.at("@alice:example.org").displayname == "Alice");
  CHECK(room.members.at("@bob:example.org").membership == "ban");  // the last one seen
  CHECK_FALSE(room.members.at("@bob:example.org").displayname);
  CHECK(room.encrypted);
  CHECK(room.name == "");  // removed in the timeline
  REQUIRE(room.power);
  CHECK(room.power->users_default == 10);
  CHECK(power_level_of(*room.power, "@alice:example.org") == 100);
  CHECK(power_level_of(*room.power, "@carol:example.org") == 50);  // room versions 1-9: a string
  CHECK(power_level_of(*room.power, "@dave:example.org") == 10);   // not a level: the default
  CHECK(room.events.empty());
  CHECK(skipped_with(b, "$9", "end-to-end encryption is not supported"));
}

TEST_CASE("a message in state, or a state event with another state_key, changes nothing", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s5","rooms":{"join":{"!a:example.org":{
    "state":{"events":[
      {"type":"m.room.message","sender":"@alice:example.org","event_id":"$m","origin_server_ts":1,
       "content":{"msgtype":"m.text","body":"hi"}},
      {"type":"m.room.encryption","state_key":"x","sender":"@alice:example.org","event_id":"$e","origin_server_ts":1,
       "content":{"algorithm":"m.megolm.v1.aes-sha2"}}]},
    "timeline":{"events":[
      {"type":"m.room.encryption","sender":"@alice:example.org","event_id":"$f","origin_server_ts":1,
       "content":{"algorithm":"m.megolm.v1.aes-sha2"}}]}}}}})");
  const auto& room = b.joined.at(0);
  CHECK(room.events.empty());
  CHECK_FALSE(room.encrypted);
  CHECK(skipped_with(b, "$f", "no 'state_key'"));
}

TEST_CASE("malformed events are skipped with a reason, the rest of the batch stays", "[matrix]") {
  const auto b = decode_ok(one_room(
      std::string(R"("just a string",42,null,{"event_id":"$notype"},)") +
      message("$good1", R"({"msgtype":"m.text","body":"first"})") + "," +
      R"({"type":"m.room.message","sender":"@alice:example.org","origin_server_ts":1,"content":{"msgtype":"m.text","body":"x"}},)" +
      message("$badsender", R"({"msgtype":"m.text","body":"x"})", "alice") + "," +
      R"({"type":"m.room.message","event_id":"$numsender","sender":5,"origin_server_ts":1,"content":{"msgtype":"m.text","body":"x"}},)" +
      R"({"type":"m.room.message","event_id":"$ts","sender":"@alice:example.org","origin_server_ts":"1","content":{"msgtype":"m.text","body":"x"}},)" +
      R"({"type":"m.room.message","event_id":"$tsfloat","sender":"@alice:example.org","origin_server_ts":1.5,"content":{"msgtype":"m.text","body":"x"}},)" +
      R"({"type":"m.room.message","event_id":"$nocontent","sender":"@alice:example.org","origin_server_ts":1},)" +
      message("$nomsgtype", R"({"body":"x"})") + "," + message("$bodynum", R"({"msgtype":"m.text","body":12})") + "," +
      message("$nourl", R"({"msgtype":"m.image","body":"a.png"})") + "," +
      message("$httpurl", R"({"msgtype":"m.image","body":"a.png","url":"https://evil.example/a.png"})") + "," +
      message("$badmxc", R"({"msgtype":"m.file","body":"a","url":"mxc://example.org/../../etc"})") + "," +
      message("$e2ee", R"({"msgtype":"m.file","body":"a","file":{"url":"mxc://example.org/x","v":"v2"}})") + "," +
      message("$surrogate", R"({"msgtype":"m.text","body":"bad \udc00 half"})") + "," +
      R"({"type":"m.room.message","event_id":"$redacted","sender":"@alice:example.org","origin_server_ts":1,"content":{},
          "unsigned":{"redacted_because":{"type":"m.room.redaction"}}},)" +
      R"({"type":"m.room.member","event_id":"$nokey","sender":"@alice:example.org","origin_server_ts":1,"content":{"membership":"join"}},)" +
      R"({"type":"m.room.member","event_id":"$nomembership","state_key":"@x:example.org","sender":"@x:example.org","origin_server_ts":1,"content":{}},)" +
      R"({"type":"m.room.member","event_id":"$keynotuser","state_key":"x","sender":"@x:example.org","origin_server_ts":1,"content":{"membership":"join"}},)" +
      message("$good1", R"({"msgtype":"m.text","body":"again"})") + "," +
      message("$good2", R"({"msgtype":"m.text","body":"last"})")));
  const auto& room = b.joined.at(0);
  REQUIRE(room.events.size() == 2);
  CHECK(msg(room, 0).event_id == "$good1");
  CHECK(msg(room, 0).body == "first");
  CHECK(msg(room, 1).event_id == "$good2");
  CHECK(room.members.empty());

  CHECK(skipped_with(b, "", "not an object"));
  CHECK(skipped_with(b, "$notype", "no 'type'"));
  CHECK(skipped_with(b, "", "no 'event_id'"));
  CHECK(skipped_with(b, "$badsender", "'sender' is not a user id"));
  CHECK(skipped_with(b, "$numsender", "'sender' is not a string"));
  CHECK(skipped_with(b, "$ts", "'origin_server_ts' is not an integer"));
  CHECK(skipped_with(b, "$tsfloat", "'origin_server_ts' is not an integer"));
  CHECK(skipped_with(b, "$nocontent", "no 'content' object"));
  CHECK(skipped_with(b, "$nomsgtype", "no 'msgtype'"));
  CHECK(skipped_with(b, "$bodynum", "'body' is not a string"));
  CHECK(skipped_with(b, "$nourl", "without 'url'"));
  CHECK(skipped_with(b, "$httpurl", "not an mxc:// URI"));
  CHECK(skipped_with(b, "$badmxc", "not an mxc:// URI"));
  CHECK(skipped_with(b, "$e2ee", "encrypted attachment"));
  CHECK(skipped_with(b, "$surrogate", "'body' is not valid UTF-8"));
  CHECK(skipped_with(b, "$redacted", "redacted"));
  CHECK(skipped_with(b, "$nokey", "no 'state_key'"));
  CHECK(skipped_with(b, "$nomembership", "no 'membership'"));
  CHECK(skipped_with(b, "$keynotuser", "not a user id"));
  CHECK(skipped_with(b, "$good1", "repeated event_id"));
  for (const auto& s : b.skipped) CHECK(s.room_id == "!room:example.org");
}

TEST_CASE("malformed rooms are skipped, the others stay", "[matrix]") {
  const auto b = decode_ok(R"({"next_batch":"s1","rooms":{"join":{
    "!list:example.org":[],
    "no-sigil":{},
    "!bad\u0001id:example.org":{},
    "!ok:example.org":{"timeline":{"events":{"not":"an array"}},"state":[]},
    "!ok:example.org":{},
    "!ok2:example.org":{"timeline":"x","summary":{"m.joined_member_count":-4}}}}})");
  REQUIRE(b.joined.size() == 2);
  CHECK(b.joined[0].room_id == "!ok:example.org");
  CHECK(b.joined[1].room_id == "!ok2:example.org");
  CHECK_FALSE(b.joined[1].joined_member_count);
  CHECK(skipped_with(b, "", "the room is not an object"));
  CHECK(skipped_with(b, "", "a key that is not a room id"));
  CHECK(skipped_with(b, "", "'timeline' has the wrong type"));
  CHECK(skipped_with(b, "", "'state' has the wrong type"));
  CHECK(skipped_with(b, "", "listed twice"));
}

TEST_CASE("an unusable envelope is refused", "[matrix]") {
  CHECK(decode_error("").find("not JSON") != std::string::npos);
  CHECK(decode_error("<html><body>502 Bad Gateway</body></html>").find("not JSON") != std::string::npos);
  CHECK(decode_error(R"({"next_batch":"s1")").find("not JSON") != std::string::npos);  // truncated
  CHECK(decode_error(R"({"next_batch":"s1"} trailing)").find("not JSON") != std::string::npos);
  CHECK(decode_error("[]") == "the /sync response is not a JSON object");
  CHECK(decode_error("\"s1\"") == "the /sync response is not a JSON object");
  CHECK(decode_error("{}") == "the /sync response has no 'next_batch'");
  CHECK(decode_error(R"({"next_batch":12345,"rooms":[]})") == "the /sync response has 'next_batch' is not a string");
  CHECK(decode_error(R"({"next_batch":""})") == "the /sync response has an empty 'next_batch'");
  CHECK(decode_error(R"({"next_batch":"s1","rooms":[]})") == "the /sync response's 'rooms' is not an object");
  CHECK(decode_error(R"({"next_batch":"s1","rooms":{"join":[]}})") == "the /sync response's 'rooms.join' is not an object");
  CHECK(decode_error(R"({"next_batch":"s1","rooms":{"invite":"x"}})") ==
        "the /sync response's 'rooms.invite' is not an object");
  CHECK(decode_error(R"({"next_batch":"s1","rooms":{"leave":1}})") == "the /sync response's 'rooms.leave' is not an object");
  sync_limits small;
  small.max_bytes = 10;
  auto r = decode_sync(R"({"next_batch":"s1"})", bot, small);
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r) == "a /sync response of 19 bytes (limit 10)");
}

TEST_CASE("only absurd nesting refuses the whole response", "[matrix]") {
  // Outside any event, nesting is parsed (iteratively) and not walked.
  const auto nested = [](int levels) {
    return R"({"next_batch":"s1","x":)" + std::string(static_cast<std::size_t>(levels), '[') +
           std::string(static_cast<std::size_t>(levels), ']') + "}";
  };
  CHECK(decode_ok(nested(63)).next_batch == "s1");
  CHECK(decode_ok(nested(64)).next_batch == "s1");
  CHECK(decode_ok(nested(9999)).next_batch == "s1");  // 10,000 levels with the envelope
  CHECK(decode_error(nested(10000)) == "the /sync response nests deeper than 10000 levels");
  // Unbalanced: refused by the depth check, not by a recursing parser.
  CHECK(decode_error(std::string(100000, '[')) == "the /sync response nests deeper than 10000 levels");
  // Unbalanced but within the cap: the iterative parser reports the truncation.
  CHECK(decode_error(R"({"next_batch":"s1","x":)" + std::string(5000, '[')).find("not JSON") != std::string::npos);
  // Brackets inside strings do not count.
  CHECK(decode_ok(R"({"next_batch":"s1","x":")" + std::string(200, '[') + R"("})").next_batch == "s1");
  // A lower cap is honoured.
  sync_limits low;
  low.max_body_depth = 10;
  auto r = decode_sync(nested(10), bot, low);
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r) == "the /sync response nests deeper than 10 levels");
}

TEST_CASE("a 5000-level body parses without overflowing the stack", "[matrix]") {
  // Everywhere a deep value can hide: an event's content, an unknown top-level field, an
  // unknown room field, a state event of an ignored type. Under ASan a recursing parser or
  // walk would overflow the stack here.
  const std::string deep = std::string(5000, '[') + std::string(5000, ']');
  const std::string deep_object = [] {
    std::string s;
    for (int i = 0; i < 5000; ++i) s += R"({"a":)";
    s += "1";
    s += std::string(5000, '}');
    return s;
  }();
  const auto body = std::string(R"({"next_batch":"s9","account_data":)") + deep +
                    R"(,"rooms":{"join":{"!room:example.org":{"ephemeral":)" + deep_object +
                    R"(,"state":{"events":[{"type":"m.room.topic","state_key":"","content":)" + deep +
                    R"(}]},"timeline":{"events":[)" +
                    message("$deep:example.org", R"({"msgtype":"m.text","body":"hi","x":)" + deep_object + "}") +
                    "," + message("$ok:example.org", R"({"msgtype":"m.text","body":"still here"})") + "]}}}}}";
  const auto b = decode_ok(body);
  CHECK(b.next_batch == "s9");
  REQUIRE(b.joined.size() == 1);
  REQUIRE(b.joined[0].events.size() == 1);
  CHECK(msg(b.joined[0], 0).event_id == "$ok:example.org");
  CHECK(skipped_with(b, "$deep:example.org", "nests deeper than 64 levels"));
}

TEST_CASE("an event nested too deep is skipped, not the batch", "[matrix]") {
  // 1000 levels of arrays inside one message's content.
  const std::string deep = std::string(1000, '[') + std::string(1000, ']');
  const auto body = one_room(message("$before:example.org", R"({"msgtype":"m.text","body":"one"})") + "," +
                             message("$deep:example.org", R"({"msgtype":"m.text","body":"deep","x":)" + deep + "}") +
                             "," + message("$after:example.org", R"({"msgtype":"m.text","body":"two"})") + "," +
                             R"({"type":"m.reaction","event_id":"$r:example.org","sender":"@bob:example.org",)"
                             R"("origin_server_ts":1,"content":{"m.relates_to":{"rel_type":"m.annotation",)"
                             R"("event_id":"$before:example.org","key":"x","deep":)" +
                             deep + "}}}");
  const auto b = decode_ok(body);
  REQUIRE(b.joined.size() == 1);
  const auto& room = b.joined[0];
  REQUIRE(room.events.size() == 2);
  CHECK(msg(room, 0).body == "one");
  CHECK(msg(room, 1).body == "two");
  CHECK(room.prev_batch == "t1_0");
  CHECK(skipped_with(b, "$deep:example.org", "the event nests deeper than 64 levels"));
  CHECK(skipped_with(b, "$r:example.org", "the event nests deeper than 64 levels"));
  for (const auto& s : b.skipped)
    if (s.event_id == "$deep:example.org") {
      CHECK(s.room_id == "!room:example.org");
      CHECK(s.type == "m.room.message");
    }
}

TEST_CASE("the per-event depth limit counts from the event object", "[matrix]") {
  // The event is level 1, content level 2; `levels` more arrays inside content.
  const auto with_arrays = [](int levels) {
    return message("$e:example.org", R"({"msgtype":"m.text","body":"hi","x":)" +
                                         std::string(static_cast<std::size_t>(levels), '[') +
                                         std::string(static_cast<std::size_t>(levels), ']') + "}");
  };
  const auto at_limit = decode_ok(one_room(with_arrays(62)));  // 64 levels
  REQUIRE(at_limit.joined.size() == 1);
  CHECK(at_limit.joined[0].events.size() == 1);
  CHECK(at_limit.skipped.empty());
  const auto over = decode_ok(one_room(with_arrays(63)));  // 65 levels
  REQUIRE(over.joined.size() == 1);
  CHECK(over.joined[0].events.empty());
  CHECK(skipped_with(over, "$e:example.org", "nests deeper than 64 levels"));

  // A configured limit.
  sync_limits tight;
  tight.max_depth = 3;
  auto r = decode_sync(one_room(with_arrays(1)), bot, tight);  // event, content, array: 3
  REQUIRE(std::holds_alternative<sync_batch>(r));
  CHECK(std::get<sync_batch>(r).joined[0].events.size() == 1);
  r = decode_sync(one_room(with_arrays(2)), bot, tight);
  REQUIRE(std::holds_alternative<sync_batch>(r));
  CHECK(std::get<sync_batch>(r).joined[0].events.empty());
  CHECK(skipped_with(std::get<sync_batch>(r), "$e:example.org", "nests deeper than 3 levels"));
}

TEST_CASE("deep state and invite events are skipped one by one", "[matrix]") {
  const std::string deep = std::string(1000, '[') + std::string(1000, ']');
  // Power levels and a member event nested deep: skipped; the shallow member still counts.
  const auto body = one_room(
      message("$m:example.org", R"({"msgtype":"m.text","body":"hi"})"),
      R"("state":{"events":[)"
      R"({"type":"m.room.power_levels","event_id":"$pl:example.org","state_key":"","sender":"@alice:example.org",)"
      R"("content":{"users":{"@alice:example.org":100},"events":)" +
          deep +
          R"(}},)"
          R"({"type":"m.room.member","event_id":"$m1:example.org","state_key":"@bob:example.org",)"
          R"("sender":"@bob:example.org","content":{"membership":"join","x":)" +
          deep +
          R"(}},)"
          R"({"type":"m.room.member","event_id":"$m2:example.org","state_key":"@carol:example.org",)"
          R"("sender":"@carol:example.org","content":{"membership":"join"}}]},)");
  const auto b = decode_ok(body);
  REQUIRE(b.joined.size() == 1);
  const auto& room = b.joined[0];
  CHECK(!room.power);
  CHECK(room.members.count("@bob:example.org") == 0);
  CHECK(room.members.count("@carol:example.org") == 1);
  CHECK(room.events.size() == 1);
  CHECK(skipped_with(b, "$pl:example.org", "nests deeper than 64 levels"));
  CHECK(skipped_with(b, "$m1:example.org", "nests deeper than 64 levels"));

  // An invite whose name event nests deep: that event is skipped, the rest is read.
  const auto invite = std::string(R"({"next_batch":"s1","rooms":{"invite":{"!inv:example.org":{"invite_state":{"events":[)") +
                      R"({"type":"m.room.name","state_key":"","sender":"@alice:example.org","content":{"name":"Deep","x":)" +
                      deep + R"(}},)" +
                      R"({"type":"m.room.member","state_key":"@bot:example.org","sender":"@alice:example.org",)"
                      R"("content":{"membership":"invite"}}]}}}}})";
  const auto inv = decode_ok(invite);
  REQUIRE(inv.invited.size() == 1);
  CHECK(inv.invited[0].inviter == "@alice:example.org");
  CHECK(inv.invited[0].name.empty());
  bool name_skipped = false;
  for (const auto& s : inv.skipped)
    name_skipped |= s.room_id == "!inv:example.org" && s.type == "m.room.name" &&
                    s.reason.find("nests deeper than 64 levels") != std::string::npos;
  CHECK(name_skipped);
}

TEST_CASE("invalid UTF-8 is refused", "[matrix]") {
  CHECK(decode_error("{\"next_batch\":\"s1\",\"x\":\"\xff\"}").find("Invalid encoding") != std::string::npos);
  CHECK(decode_error("{\"next_batch\":\"s\xc3\"}").find("not JSON") != std::string::npos);  // a cut character
  CHECK(decode_error("{\"next_batch\":\"\xed\xa0\x80\"}").find("not JSON") != std::string::npos);  // a raw surrogate
  // Escapes RapidJSON turns into bytes that are not UTF-8 are caught where they are read.
  CHECK(decode_error(R"({"next_batch":"s\udc00"})") == "the /sync response has 'next_batch' is not valid UTF-8");
  CHECK(decode_ok(R"({"next_batch":"s\ud83d\ude00"})").next_batch == "s\xf0\x9f\x98\x80");
}

TEST_CASE("mxc URIs", "[matrix]") {
  const auto m = parse_mxc("mxc://example.org/SEsfnsuifSDFSSEF");
  REQUIRE(m);
  CHECK(m->server_name == "example.org");
  CHECK(m->media_id == "SEsfnsuifSDFSSEF");
  CHECK(parse_mxc("mxc://localhost:8448/a_b-C"));
  CHECK(parse_mxc("mxc://[2001:db8::1]:8448/x"));
  CHECK_FALSE(parse_mxc("mxc://example.org/"));
  CHECK_FALSE(parse_mxc("mxc:///abc"));
  CHECK_FALSE(parse_mxc("mxc://example.org"));
  CHECK_FALSE(parse_mxc("mxc://example.org/a/b"));
  CHECK_FALSE(parse_mxc("mxc://example.org/a?b"));
  CHECK_FALSE(parse_mxc("mxc://example.org/a%2Fb"));
  CHECK_FALSE(parse_mxc("mxc://user@example.org/a"));
  CHECK_FALSE(parse_mxc("https://example.org/a"));
  CHECK_FALSE(parse_mxc("MXC://example.org/a"));
  CHECK_FALSE(parse_mxc(""));
}

// ---- rules -------------------------------------------------------------------------------

TEST_CASE("the bot's own events", "[matrix]") {
  auto m = text_message("hi", std::string(bot));
  CHECK(is_from_bot(m, bot));
  CHECK_FALSE(is_from_bot(text_message("hi"), bot));
  CHECK_FALSE(is_from_bot(m, ""));
  CHECK_FALSE(is_from_bot(text_message("hi", "@BOT:example.org"), bot));  // user ids compare exactly
  reaction_event r;
  r.sender = std::string(bot);
  CHECK(is_from_bot(r, bot));
  CHECK(is_from_bot(timeline_event{r}, bot));
  CHECK_FALSE(is_from_bot(timeline_event{text_message("x")}, bot));
}

TEST_CASE("what the bot takes no turn for", "[matrix]") {
  CHECK_FALSE(should_ignore(text_message("hello"), bot));
  CHECK(should_ignore(text_message("hello", std::string(bot)), bot) == "sent by the bot");
  auto notice = text_message("beep");
  notice.msgtype = "m.notice";
  CHECK(should_ignore(notice, bot)->find("m.notice") != std::string::npos);
  auto edit = text_message("* hi");
  edit.edit = edit_info{"$orig", "hi", "m.text", ""};
  CHECK(should_ignore(edit, bot) == "an edit, not a new turn");
  CHECK(should_ignore(text_message(""), bot) == "an empty body");
  CHECK(should_ignore(text_message(" \n\t "), bot) == "an empty body");
  auto verification = text_message("Alice is requesting to verify your key");
  verification.msgtype = "m.key.verification.request";
  CHECK(should_ignore(verification, bot));
  auto image = text_message("");
  image.msgtype = "m.image";
  image.media = media_ref{"mxc://example.org/x", "x.png", 3, "image/png"};
  CHECK_FALSE(should_ignore(image, bot));  // media without a caption is something to answer
  auto emote = text_message("waves");
  emote.msgtype = "m.emote";
  CHECK_FALSE(should_ignore(emote, bot));
}

TEST_CASE("whether a message addresses the bot", "[matrix]") {
  const std::string bot_id(bot);
  const auto addressed = [&](const message_event& m, std::int64_t members = 5, const std::string* sender = nullptr) {
    return is_addressed(m, bot, "Star", members, sender);
  };
  CHECK_FALSE(addressed(text_message("just chatting")));
  CHECK(addressed(text_message("just chatting"), 2));  // a DM
  CHECK_FALSE(addressed(text_message("just chatting"), 0));
  CHECK_FALSE(addressed(text_message("just chatting"), 3));

  auto mention = text_message("hey you");
  mention.mentioned_user_ids = {"@carol:example.org", bot_id};
  CHECK(addressed(mention));
  auto other = text_message("hey you");
  other.mentioned_user_ids = {"@carol:example.org"};
  CHECK_FALSE(addressed(other));
  auto room_ping = text_message("@room meeting now");
  room_ping.mentions_room = true;
  CHECK_FALSE(addressed(room_ping));  // @room is not the bot

  auto reply = text_message("thanks");
  reply.reply_to = "$bots_message";
  CHECK(addressed(reply, 5, &bot_id));
  const std::string alice = "@alice:example.org";
  CHECK_FALSE(addressed(reply, 5, &alice));
  CHECK_FALSE(addressed(reply, 5, nullptr));
  CHECK_FALSE(addressed(text_message("thanks"), 5, &bot_id));  // not a reply at all

  CHECK(addressed(text_message("star, what do you think?")));
  CHECK(addressed(text_message("Hey STAR")));
  CHECK(addressed(text_message("ask @Star")));
  CHECK_FALSE(addressed(text_message("a starry night")));
  CHECK_FALSE(addressed(text_message("superstar")));
  CHECK_FALSE(addressed(text_message("stars")));
  CHECK_FALSE(is_addressed(text_message("star"), bot, "", 5, nullptr));  // no display name: no name rule

  CHECK(addressed(text_message("@bot:example.org: hello")));  // legacy: the user id in the body
  CHECK(addressed(text_message("ping @bot:example.org")));
  CHECK(addressed(text_message("ping @bot:example.org.")));
  CHECK(addressed(text_message("(@bot:example.org)")));
  CHECK_FALSE(addressed(text_message("ping @bot:example.org.evil")));
  CHECK_FALSE(addressed(text_message("ping @bot:example.org:8448")));
  CHECK_FALSE(addressed(text_message("ping @robot:example.org")));
  CHECK_FALSE(addressed(text_message("ping x@bot:example.org")));
  auto pill = text_message("Robo: hello");
  pill.formatted_body = R"(<a href="https://matrix.to/#/@bot:example.org">Robo</a>: hello)";
  CHECK(addressed(pill));
  pill.formatted_body = R"(<a href="https://matrix.to/#/%40bot%3Aexample.org">Robo</a>: hello)";
  CHECK(addressed(pill));
  pill.formatted_body = R"(<a href="matrix:u/bot:example.org?action=chat">Robo</a>: hello)";
  CHECK(addressed(pill));
  pill.formatted_body = R"(<a href="https://matrix.to/#/@bot:example.org.evil">Robo</a>: hello)";
  CHECK_FALSE(addressed(pill));
}

TEST_CASE("allowed users: glob patterns", "[matrix]") {
  CHECK(user_allowed("@anyone:anywhere", {}));
  const std::vector<std::string> org{"@*:example.org"};
  CHECK(user_allowed("@alice:example.org", org));
  CHECK(user_allowed("@:example.org", org));  // '*' matches nothing too
  CHECK_FALSE(user_allowed("@alice:example.org.evil", org));
  CHECK_FALSE(user_allowed("@alice:evil.org", org));
  CHECK_FALSE(user_allowed("@alice:Example.org", org));  // case-sensitive
  CHECK_FALSE(user_allowed("alice:example.org", org));
  CHECK(user_allowed("@bob:example.org", {"@alice:example.org", "@bob:example.org"}));
  CHECK_FALSE(user_allowed("@bobby:example.org", {"@bob:example.org"}));
  CHECK(user_allowed("@bo1:example.org", {"@bo?:example.org"}));
  CHECK_FALSE(user_allowed("@bo:example.org", {"@bo?:example.org"}));
  CHECK_FALSE(user_allowed("@bo12:example.org", {"@bo?:example.org"}));
  CHECK(user_allowed("@a-x-b-y-c:s", {"@a*b*c:s"}));
  CHECK(user_allowed("@abc:s", {"@a**b*c:s"}));
  CHECK_FALSE(user_allowed("@acb:s", {"@a*b*c:s"}));
  CHECK(user_allowed("", {"*"}));
  CHECK(user_allowed("", {""}));
  CHECK_FALSE(user_allowed("@x:y", {""}));
  // A hostile pattern does not take exponential time.
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(user_allowed(std::string(5000, 'a'), {std::string(50, '*') + std::string(5000, 'a') + "b"}));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE("auto-join policies", "[matrix]") {
  CHECK(parse_auto_join("off") == auto_join::off);
  CHECK(parse_auto_join("invited-by-allowed") == auto_join::invited_by_allowed);
  CHECK(parse_auto_join("all") == auto_join::all);
  std::string error;
  CHECK_FALSE(parse_auto_join("ALL", &error));
  CHECK(error.find("\"ALL\"") != std::string::npos);
  CHECK_FALSE(parse_auto_join("", &error));
  CHECK(error.find("\"\"") != std::string::npos);
  CHECK_FALSE(parse_auto_join("invited_by_allowed"));
  for (auto p : {auto_join::off, auto_join::invited_by_allowed, auto_join::all}) CHECK(parse_auto_join(to_string(p)) == p);

  const std::vector<std::string> allowed{"@*:example.org"};
  CHECK_FALSE(should_join(auto_join::off, "@alice:example.org", allowed, false).join);
  CHECK(should_join(auto_join::off, "@alice:example.org", allowed, false).reason == "auto-join is off");
  CHECK(should_join(auto_join::all, "@mallory:evil.org", allowed, false).join);
  CHECK(should_join(auto_join::all, "", allowed, false).join);
  CHECK(should_join(auto_join::invited_by_allowed, "@alice:example.org", allowed, false).join);
  const auto refused = should_join(auto_join::invited_by_allowed, "@mallory:evil.org", allowed, false);
  CHECK_FALSE(refused.join);
  CHECK(refused.reason.find("@mallory:evil.org") != std::string::npos);
  CHECK_FALSE(should_join(auto_join::invited_by_allowed, "", allowed, false).join);
  CHECK_FALSE(should_join(auto_join::invited_by_allowed, "", {}, false).join);  // unknown inviter
  CHECK(should_join(auto_join::invited_by_allowed, "@anyone:anywhere", {}, false).join);  // empty list: everyone
  for (auto p : {auto_join::invited_by_allowed, auto_join::all}) {
    const auto d = should_join(p, "@alice:example.org", allowed, true);
    CHECK_FALSE(d.join);
    CHECK(d.reason.find("encrypted") != std::string::npos);
  }
}

TEST_CASE("transaction ids are deterministic, distinct and URL-safe", "[matrix]") {
  const auto a = txn_id_for("discord:123:456", 0);
  CHECK(a == txn_id_for("discord:123:456", 0));
  CHECK(a.size() == 64);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a != txn_id_for("discord:123:456", 1));
  CHECK(a != txn_id_for("discord:123:457", 0));
  CHECK(txn_id_for("k1", 1) != txn_id_for("k", 11));  // the part is not glued to the key
  CHECK(txn_id_for("", 0).size() == 64);
  CHECK(txn_id_for(std::string(100000, 'x'), -1).size() == 64);
}

TEST_CASE("the sync filter", "[matrix]") {
  const auto text = sync_filter_json();
  auto parsed = stargazer::json::parse_object(text);
  REQUIRE(std::holds_alternative<rapidjson::Document>(parsed));
  const auto& f = std::get<rapidjson::Document>(parsed);
  const auto strings = [](const rapidjson::Value& list) {
    std::vector<std::string> out;
    for (const auto& s : list.GetArray()) out.emplace_back(s.GetString());
    return out;
  };
  const auto& room = f["room"];
  CHECK(room["timeline"]["limit"].GetInt() == 50);
  CHECK(strings(room["timeline"]["types"]) ==
        std::vector<std::string>{"m.room.message", "m.reaction", "m.room.member", "m.room.encryption", "m.room.name",
                                 "m.room.power_levels"});
  CHECK(strings(room["state"]["types"]) ==
        std::vector<std::string>{"m.room.member", "m.room.encryption", "m.room.name", "m.room.power_levels"});
  CHECK(room["state"]["lazy_load_members"].IsFalse());
  CHECK(strings(room["ephemeral"]["not_types"]) == std::vector<std::string>{"*"});
  CHECK(strings(room["account_data"]["not_types"]) == std::vector<std::string>{"*"});
  CHECK(strings(f["presence"]["not_types"]) == std::vector<std::string>{"*"});
  CHECK(strings(f["account_data"]["not_types"]) == std::vector<std::string>{"*"});
  CHECK(sync_filter_json(10).find(R"("limit":10)") != std::string::npos);
  CHECK(sync_filter_json(0).find(R"("limit":1)") != std::string::npos);  // the spec requires limit > 0
}

TEST_CASE("power levels rank users, and 50 and above are channel admins", "[matrix]") {
  const auto p = parse_power_levels(
      R"({"ban":50,"events":{"m.room.name":100},"events_default":0,"users":{"@alice:example.org":100,"@mod:example.org":50,
          "@helper:example.org":49,"@old:example.org":" 75 ","@odd:example.org":1.5},"users_default":0})");
  REQUIRE(p);
  CHECK(power_level_of(*p, "@alice:example.org") == 100);
  CHECK(is_room_admin(*p, "@alice:example.org"));
  CHECK(is_room_admin(*p, "@mod:example.org"));
  CHECK_FALSE(is_room_admin(*p, "@helper:example.org"));
  CHECK(power_level_of(*p, "@old:example.org") == 75);
  CHECK(power_level_of(*p, "@odd:example.org") == 0);  // not an integer: the default
  CHECK(power_level_of(*p, "@nobody:example.org") == 0);

  const auto everyone = parse_power_levels(R"({"users_default":50})");
  REQUIRE(everyone);
  CHECK(is_room_admin(*everyone, "@anyone:example.org"));
  const auto empty = parse_power_levels("{}");
  REQUIRE(empty);
  CHECK(power_level_of(*empty, "@anyone:example.org") == 0);
  const auto wrong = parse_power_levels(R"({"users":[1,2],"users_default":"high"})");
  REQUIRE(wrong);
  CHECK(power_level_of(*wrong, "@anyone:example.org") == 0);
  CHECK_FALSE(parse_power_levels("[]"));
  CHECK_FALSE(parse_power_levels("not json"));
  CHECK(power_level_of(power_levels{{{"@neg:x", -10}}, 0}, "@neg:x") == -10);
}
