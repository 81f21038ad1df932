#include "stargazer/bus/envelope.hpp"

#include <catch2/catch.hpp>
#include <msgpack.hpp>

using namespace stargazer::bus;

namespace {

template <class T>
const decode_failure& failure(const decoded<T>& d) {
  REQUIRE(std::holds_alternative<decode_failure>(d));
  return std::get<decode_failure>(d);
}


// A map built by hand, for seed-shaped and hostile envelopes.
template <class... KV>
std::string packed(KV&&... kv) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  p.pack_map(sizeof...(KV) / 2);
  (p.pack(std::forward<KV>(kv)), ...);
  return {buf.data(), buf.size()};
}

}  // namespace

TEST_CASE("inbound envelopes round-trip every field", "[envelope]") {
  inbound_envelope in;
  in.platform = "redis";
  in.channel_id = "inst-1";
  in.user_id = "u1";
  in.username = "Ada";
  in.content = "hello \xe2\x9c\xa8";
  in.is_addressed = false;
  in.attachments.push_back({std::string("\0\x01\xff", 3), "image/png", "a.png", ""});
  in.timestamp = 1700000000.5;
  in.message_id = "m1";
  in.reply_to = "m0";
  in.unified_user_id = "uu";
  in.user_aliases = {"ada", "lovelace"};
  in.guild_id = "g";
  in.is_dm = true;
  in.member_roles = {"admin"};
  in.member_count = 42;
  in.trace_id = "0123456789abcdef0123456789abcdef";
  in.response_nonce = "nonce";
  in.extra = {{"k", "v"}};
  in.cached = true;
  inbound_envelope plain;
  plain.platform = "redis";
  plain.channel_id = "c";
  CHECK_FALSE(std::get<inbound_envelope>(decode_inbound(encode(plain))).cached);
  auto out = decode_inbound(encode(in));
  REQUIRE(std::holds_alternative<inbound_envelope>(out));
  const auto& e = std::get<inbound_envelope>(out);
  CHECK(e.platform == "redis");
  CHECK(e.channel_id == "inst-1");
  CHECK(e.content == in.content);
  CHECK_FALSE(e.is_addressed);
  REQUIRE(e.attachments.size() == 1);
  CHECK(e.attachments[0].data == in.attachments[0].data);
  CHECK(e.attachments[0].mimetype == "image/png");
  CHECK(e.timestamp == 1700000000.5);
  CHECK(e.unified_user_id == "uu");
  CHECK(e.user_aliases == in.user_aliases);
  CHECK(e.guild_id == "g");
  CHECK(e.is_dm);
  CHECK(e.member_count == 42);
  CHECK(e.response_nonce == "nonce");
  CHECK(e.extra == in.extra);
  CHECK(e.cached);
}

TEST_CASE("outbound envelopes of every type round-trip", "[envelope]") {
  for (auto type : {outbound_type::message, outbound_type::file, outbound_type::buttons, outbound_type::typing,
                    outbound_type::start_typing, outbound_type::stop_typing, outbound_type::reaction,
                    outbound_type::presence, outbound_type::rpc_request, outbound_type::turn_complete}) {
    INFO(to_string(type));
    outbound_envelope o;
    o.type = type;
    o.channel_id = "c";
    o.message_key = "sg:msg:redis:c:1-0:0";
    o.text = "hi";
    o.file_data = std::string("\0bin", 4);
    o.filename = "f.txt";
    o.mimetype = "text/plain";
    o.buttons = {{"Yes", "y", ""}};
    o.message_id = "m";
    o.emoji = "+1";
    o.rpc_method = "fetch_channel_history";
    o.rpc_args_json = R"({"limit":5})";
    o.reply_key = "sg:rpc:reply:x";
    o.request_id = "x";
    o.response_nonce = "n";
    auto d = decode_outbound(encode(o));
    REQUIRE(std::holds_alternative<outbound_envelope>(d));
    const auto& e = std::get<outbound_envelope>(d);
    CHECK(e.type == type);
    if (type == outbound_type::file) CHECK(e.file_data == o.file_data);
    if (type == outbound_type::buttons) CHECK(e.buttons.size() == 1);
    if (type == outbound_type::rpc_request) CHECK(e.rpc_args_json == o.rpc_args_json);
    if (type == outbound_type::reaction) CHECK(e.emoji == "+1");
  }
}

TEST_CASE("seed-shaped envelopes decode: no version, base64 attachments, unknown fields", "[envelope]") {
  const auto bytes = packed("platform", "redis", "channel_id", "c", "content", "hi", "future_field", 7, "attachments",
                            std::vector<std::map<std::string, std::string>>{{{"data", "aGVsbG8="}, {"filename", "h.txt"}}});
  auto d = decode_inbound(bytes);
  REQUIRE(std::holds_alternative<inbound_envelope>(d));
  CHECK(std::get<inbound_envelope>(d).attachments[0].data == "hello");
  // An outbound envelope without type is a message.
  auto m = decode_outbound(packed("channel_id", "c", "text", "t"));
  REQUIRE(std::holds_alternative<outbound_envelope>(m));
  CHECK(std::get<outbound_envelope>(m).type == outbound_type::message);
}

TEST_CASE("malformed envelopes give a reason, never a crash", "[envelope]") {
  CHECK(failure(decode_inbound("")).code == "missing_data");
  CHECK(failure(decode_inbound("\xc1")).code == "decode_error");
  CHECK(failure(decode_inbound(packed("platform", "redis"))).code == "missing_field");
  CHECK(failure(decode_inbound(std::string("\x93\x01\x02\x03", 4))).detail.find("not a map") != std::string::npos);
  CHECK(failure(decode_inbound(packed("platform", "redis", "channel_id", 5))).code == "bad_field_type");
  CHECK(failure(decode_inbound(packed("v", 2, "platform", "redis", "channel_id", "c"))).code == "unsupported_version");
  CHECK(failure(decode_outbound(packed("type", "teleport", "channel_id", "c"))).code == "unknown_type");
  CHECK(failure(decode_outbound(packed("type", "message", "text", "x"))).detail == "channel_id");
  // A truncated envelope and trailing garbage.
  auto good = packed("platform", "redis", "channel_id", "c");
  CHECK(failure(decode_inbound(good.substr(0, good.size() - 1))).code == "decode_error");
  CHECK(failure(decode_inbound(good + "x")).code == "decode_error");
  // Five bytes claiming an array of 4 billion elements: refused without allocating.
  CHECK(failure(decode_inbound(std::string("\xdd\xff\xff\xff\xff", 5))).code == "limit_exceeded");
  CHECK(failure(decode_inbound(std::string("\xdf\xff\xff\xff\xff", 5))).code == "limit_exceeded");
  // Deep nesting.
  std::string deep(100, '\x91');
  deep += '\x01';
  CHECK(failure(decode_inbound(deep)).code == "limit_exceeded");
  // Bad base64.
  CHECK(failure(decode_inbound(packed("platform", "r", "channel_id", "c", "attachments",
                                      std::vector<std::map<std::string, std::string>>{{{"data", "!!!"}}})))
            .code == "bad_field_type");
}

TEST_CASE("tool requests and replies round-trip, a request without a deadline is refused", "[envelope][tools]") {
  tool_request r;
  r.request_id = "abc";
  r.reply_stream = "sg:tools:reply:w1";
  r.tool_name = "calculator";
  r.tool_args_json = R"({"expression":"1+1"})";
  r.tool_ctx = {{"platform", "redis"}, {"channel_id", "c"}};
  r.deadline = 1700000000.5;
  r.trace_id = "t";
  auto back = decode_tool_request(encode(r));
  REQUIRE(std::holds_alternative<tool_request>(back));
  const auto& d = std::get<tool_request>(back);
  CHECK(d.tool_name == "calculator");
  CHECK(d.tool_args_json == r.tool_args_json);
  CHECK(d.tool_ctx == r.tool_ctx);
  CHECK(d.deadline == 1700000000.5);

  r.deadline = 0;
  auto refused = decode_tool_request(encode(r));
  REQUIRE(std::holds_alternative<decode_failure>(refused));
  CHECK(std::get<decode_failure>(refused).code == "missing_field");

  tool_reply reply;
  reply.request_id = "abc";
  reply.ok = true;
  reply.result = "2";
  reply.media.push_back({std::string("a,b\n1,2\n"), "text/csv", "t.csv", ""});
  auto rb = decode_tool_reply(encode(reply));
  REQUIRE(std::holds_alternative<tool_reply>(rb));
  CHECK(std::get<tool_reply>(rb).ok);
  CHECK(std::get<tool_reply>(rb).result == "2");
  REQUIRE(std::get<tool_reply>(rb).media.size() == 1);
  CHECK(std::get<tool_reply>(rb).media[0].filename == "t.csv");
  CHECK(std::holds_alternative<decode_failure>(decode_tool_reply(encode(r))));  // wrong type
}
