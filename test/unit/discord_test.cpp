// Discord's pure pieces: message splitting.

#include "stargazer/platform/discord/message_split.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace stargazer::platform::discord;

namespace {

std::size_t fences(const std::string& s) {
  std::size_t n = 0;
  for (auto p = s.find("```"); p != std::string::npos; p = s.find("```", p + 3)) ++n;
  return n;
}

// The text without whitespace, so parts can be compared with the original.
std::string squeezed(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != ' ' && c != '\n') out.push_back(c);
  return out;
}

}  // namespace

TEST_CASE("a short reply is one message, unchanged", "[discord]") {
  CHECK(split_message("hello there") == std::vector<std::string>{"hello there"});
  CHECK(split_message("").empty());
  const std::string exact(2000, 'a');
  CHECK(split_message(exact) == std::vector<std::string>{exact});
}

TEST_CASE("long replies split at paragraphs, then sentences, then words", "[discord]") {
  std::string paragraph(1500, 'x');
  const auto parts = split_message(paragraph + "\n\n" + paragraph + "\n\n" + paragraph);
  REQUIRE(parts.size() == 3);
  for (const auto& p : parts) CHECK(p == paragraph);

  std::string sentences;
  while (sentences.size() < 2500) sentences += "This is one sentence. ";
  const auto by_sentence = split_message(sentences);
  REQUIRE(by_sentence.size() == 2);
  CHECK(by_sentence[0].back() == '.');
  CHECK(count_chars(by_sentence[0]) <= 2000);

  std::string words;
  while (words.size() < 2500) words += "word ";
  const auto by_word = split_message(words);
  REQUIRE(by_word.size() == 2);
  CHECK(by_word[0].ends_with("word"));
  CHECK(squeezed(by_word[0] + by_word[1]) == squeezed(words));
}

TEST_CASE("a 4,500-character reply arrives as 3 ordered parts", "[discord]") {
  std::string text;
  for (int i = 0; text.size() < 4500; ++i) text += "Sentence number " + std::to_string(i) + " says something. ";
  text.resize(4500);
  const auto parts = split_message(text);
  REQUIRE(parts.size() == 3);
  std::string joined;
  for (const auto& p : parts) {
    CHECK(count_chars(p) <= 2000);
    joined += p;
  }
  CHECK(squeezed(joined) == squeezed(text));
  CHECK(parts[0].starts_with("Sentence number 0 "));
}

TEST_CASE("a code block is closed and reopened with its language across parts", "[discord]") {
  std::string code = "Here is the code:\n```python\n";
  for (int i = 0; i < 200; ++i) code += "print('line " + std::to_string(i) + "')\n";
  code += "```\nThat was it.";
  const auto parts = split_message(code);
  REQUIRE(parts.size() >= 2);
  for (const auto& p : parts) {
    INFO(p.substr(0, 40));
    CHECK(count_chars(p) <= 2000);
    CHECK(fences(p) % 2 == 0);  // every part opens and closes its fences
  }
  CHECK(parts[1].starts_with("```python\n"));
  CHECK(parts.back().ends_with("That was it."));
}

TEST_CASE("splitting counts characters and never cuts a UTF-8 sequence", "[discord]") {
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "é";  // 2 bytes each, no spaces
  const auto parts = split_message(text);
  REQUIRE(parts.size() == 2);
  CHECK(count_chars(parts[0]) <= 2000);
  CHECK(count_chars(parts[0]) + count_chars(parts[1]) == 3000);
  for (const auto& p : parts) CHECK((static_cast<unsigned char>(p.front()) & 0xc0) != 0x80);
}

// ---- the gateway's wire format ----------------------------------------------------------

#include "stargazer/platform/discord/gateway_protocol.hpp"

#include <zlib.h>

namespace {

// Compresses `messages` as one zlib stream, each ending with a sync flush, as Discord sends them.
std::vector<std::string> zlib_frames(const std::vector<std::string>& messages) {
  z_stream z{};
  REQUIRE(deflateInit(&z, Z_DEFAULT_COMPRESSION) == Z_OK);
  std::vector<std::string> frames;
  for (const auto& m : messages) {
    std::string out(m.size() + 1024, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(m.data()));
    z.avail_in = static_cast<uInt>(m.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
    out.resize(out.size() - z.avail_out);
    frames.push_back(out);
  }
  deflateEnd(&z);
  return frames;
}

}  // namespace

TEST_CASE("zlib-stream: one context per connection, a message ends at 00 00 ff ff", "[discord]") {
  const std::string big(100'000, 'x');  // inflates past one output chunk
  const auto frames = zlib_frames({R"({"op":10,"d":{"heartbeat_interval":41250}})", big, R"({"op":11})"});
  zlib_stream stream;
  auto first = stream.feed(frames[0]);
  REQUIRE(std::holds_alternative<std::string>(first));
  CHECK(std::get<std::string>(first) == R"({"op":10,"d":{"heartbeat_interval":41250}})");
  // A message split over several frames completes only with its last one.
  const auto& second = frames[1];
  const auto half = second.size() / 2;
  CHECK(std::holds_alternative<zlib_stream::incomplete>(stream.feed(second.substr(0, half))));
  auto whole = stream.feed(second.substr(half));
  REQUIRE(std::holds_alternative<std::string>(whole));
  CHECK(std::get<std::string>(whole) == big);
  auto third = stream.feed(frames[2]);
  REQUIRE(std::holds_alternative<std::string>(third));
  CHECK(std::get<std::string>(third) == R"({"op":11})");
}

TEST_CASE("zlib-stream: corrupt data and oversized messages fail the stream", "[discord]") {
  zlib_stream stream;
  auto bad = stream.feed(std::string("not zlib at all\x00\x00\xff\xff", 19));
  REQUIRE(std::holds_alternative<zlib_stream::failure>(bad));
  CHECK(std::get<zlib_stream::failure>(bad).reason.find("invalid zlib data") != std::string::npos);
  CHECK(std::holds_alternative<zlib_stream::failure>(stream.feed(zlib_frames({"{}"})[0])));  // unusable now

  zlib_stream small(1000);
  auto over = small.feed(zlib_frames({std::string(5000, 'y')})[0]);
  REQUIRE(std::holds_alternative<zlib_stream::failure>(over));
  CHECK(std::get<zlib_stream::failure>(over).reason.find("over 1000 bytes") != std::string::npos);
}

TEST_CASE("gateway payloads decode defensively", "[discord]") {
  auto ok = parse_payload(R"({"op":0,"s":42,"t":"MESSAGE_CREATE","d":{"id":"1","content":"hi"}})");
  REQUIRE(std::holds_alternative<payload>(ok));
  const auto& p = std::get<payload>(ok);
  CHECK(p.op == 0);
  CHECK(p.seq == 42);
  CHECK(p.type == "MESSAGE_CREATE");
  CHECK(p.data_json == R"({"id":"1","content":"hi"})");

  auto hello = parse_payload(R"({"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null})");
  REQUIRE(std::holds_alternative<payload>(hello));
  CHECK_FALSE(std::get<payload>(hello).seq.has_value());

  for (const char* bad : {"", "nope", "[]", R"({"d":{}})", R"({"op":"10"})", R"({"op":1.5})"}) {
    INFO(bad);
    CHECK(std::holds_alternative<std::string>(parse_payload(bad)));
  }
  CHECK(std::holds_alternative<std::string>(parse_payload(std::string(200, '[') + std::string(200, ']'))));
  CHECK(std::holds_alternative<std::string>(parse_payload(std::string(100, ' '), 50)));
}

TEST_CASE("gateway commands are the documented JSON", "[discord]") {
  CHECK(heartbeat_command(std::nullopt) == R"({"op":1,"d":null})");
  CHECK(heartbeat_command(7) == R"({"op":1,"d":7})");
  const auto identify = identify_command("tok\"en", default_intents, 1, 4);
  CHECK(identify.find(R"("token":"tok\"en")") != std::string::npos);
  CHECK(identify.find(R"("shard":[1,4])") != std::string::npos);
  CHECK(identify.find(R"("intents":38401)") != std::string::npos);
  CHECK(std::holds_alternative<payload>(parse_payload(identify)));
  CHECK(resume_command("t", "sess", 99) == R"({"op":6,"d":{"token":"t","session_id":"sess","seq":99}})");
  const auto presence = presence_command("thinking", "🤔");
  CHECK(presence.find(R"("type":4,"state":"thinking","emoji":{"name":"🤔"})") != std::string::npos);
  CHECK(std::holds_alternative<payload>(parse_payload(presence)));
}

TEST_CASE("close codes: fatal ones stop the shard, the rest resume", "[discord]") {
  for (int code : {4004, 4010, 4011, 4012, 4013, 4014}) CHECK(after_close(code) == close_action::fatal);
  for (int code : {1000, 1001, 1006, 4000, 4001, 4002, 4003, 4005, 4008}) CHECK(after_close(code) == close_action::resume);
  for (int code : {4007, 4009}) CHECK(after_close(code) == close_action::reidentify);
  CHECK(describe_close(4014).find("privileged intents") != std::string::npos);
}

TEST_CASE("intents, connect URLs and shard routing", "[discord]") {
  CHECK(parse_intents("guilds,guild_messages, message_content") ==
        (intent::guilds | intent::guild_messages | intent::message_content));
  CHECK(parse_intents("513") == 513u);
  std::string error;
  CHECK_FALSE(parse_intents("guilds,typing", &error));
  CHECK(error == "unknown intent 'typing'");
  CHECK_FALSE(parse_intents(""));

  CHECK(gateway_connect_url("wss://gateway.discord.gg", true) == "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream");
  CHECK(gateway_connect_url("ws://127.0.0.1:9000/gateway", false) == "ws://127.0.0.1:9000/gateway?v=10&encoding=json");
  CHECK(gateway_connect_url("wss://resume.example/?v=9", false) == "wss://resume.example/?v=10&encoding=json");

  CHECK(shard_of("", 4) == 0);
  CHECK(shard_of("175928847299117063", 1) == 0);
  CHECK(shard_of("175928847299117063", 4) == static_cast<int>((175928847299117063ull >> 22) % 4));
}
