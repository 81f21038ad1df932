// The pure rules of group chats: the reply policy and its option, triage prompts and
// answers (and the echo model's triage rule), chat commands and privilege, the heartbeat's
// reply and timing, the <dstatus> status line.

#include "roles/options.hpp"
#include "stargazer/llm/echo_client.hpp"
#include "stargazer/worker/group_chat_rules.hpp"
#include "stargazer/worker/heartbeat.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace stargazer;
using namespace stargazer::worker;
using namespace std::chrono_literals;

namespace {

incoming_message message(std::string platform, std::string text, bool addressed = false) {
  incoming_message m;
  m.platform = std::move(platform);
  m.channel_id = "room";
  m.user_id = "u1";
  m.user_name = "Ada";
  m.text = std::move(text);
  m.is_addressed = addressed;
  return m;
}

reply_policy_spec spec_of(std::string_view text) {
  auto parsed = parse_reply_policy_spec(text);
  INFO(text);
  REQUIRE(std::holds_alternative<reply_policy_spec>(parsed));
  return std::get<reply_policy_spec>(parsed);
}

std::string spec_error(std::string_view text) {
  auto parsed = parse_reply_policy_spec(text);
  INFO(text);
  REQUIRE(std::holds_alternative<std::string>(parsed));
  return std::get<std::string>(parsed);
}

struct parse_outcome {
  std::variant<parsed_command, parse_exit> result;
  std::string err;
};

parse_outcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "stargazer");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto r = parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err);
  return {std::move(r), err.str()};
}

}  // namespace

TEST_CASE("a reply policy is one policy or a default with per-platform overrides", "[group][policy]") {
  CHECK(spec_of("triage").fallback == reply_policy::triage);
  CHECK(spec_of(" Always ").fallback == reply_policy::always);
  const auto s = spec_of("addressed, webchat=always ,Discord=triage");
  CHECK(s.fallback == reply_policy::addressed);
  CHECK(s.for_platform("webchat") == reply_policy::always);
  CHECK(s.for_platform("discord") == reply_policy::triage);
  CHECK(s.for_platform("redis") == reply_policy::addressed);
  // Overrides only: the default stays triage.
  CHECK(spec_of("redis=addressed").fallback == reply_policy::triage);
  CHECK(spec_of("redis=addressed").for_platform("redis") == reply_policy::addressed);

  CHECK(spec_error("").find("empty") != std::string::npos);
  CHECK(spec_error("sometimes").find("'sometimes' is not a policy") != std::string::npos);
  CHECK(spec_error("triage,always").find("two defaults") != std::string::npos);
  CHECK(spec_error("triage,,always").find("empty item") != std::string::npos);
  CHECK(spec_error("triage,").find("empty item") != std::string::npos);
  CHECK(spec_error("redis=always,redis=triage").find("twice") != std::string::npos);
  CHECK(spec_error("re dis=always").find("not a platform name") != std::string::npos);
  CHECK(spec_error("=always").find("not a platform name") != std::string::npos);
  CHECK(spec_error("webchat=loud").find("'loud' is not a policy") != std::string::npos);
  CHECK(to_string(reply_policy::addressed) == "addressed");
}

TEST_CASE("the reply policy and the other group-chat options are checked at parse time", "[group][config]") {
  const auto ok = parse({"--reply-policy=triage,webchat=always,redis=addressed", "--admin-roles=r1,r2",
                         "--webchat-admins=ada", "--command-prefix=?", "--heartbeat-interval=0"});
  REQUIRE(std::holds_alternative<parsed_command>(ok.result));
  const auto& cfg = std::get<parsed_command>(ok.result).cfg;
  CHECK(cfg.reply_policy == "triage,webchat=always,redis=addressed");
  CHECK(cfg.admin_roles == std::vector<std::string>{"r1", "r2"});
  CHECK(cfg.webchat_admins == std::vector<std::string>{"ada"});
  CHECK(cfg.command_prefix == "?");
  CHECK(cfg.heartbeat_interval_seconds == 0);

  const auto defaults = parse({});
  REQUIRE(std::holds_alternative<parsed_command>(defaults.result));
  const auto& d = std::get<parsed_command>(defaults.result).cfg;
  CHECK(d.reply_policy == "triage");
  CHECK(d.triage_max_tokens == 5);
  CHECK(d.unprompted_cooldown_seconds == 120);
  CHECK(d.command_prefix == "!");
  CHECK(d.heartbeat_initial_delay_seconds == 120);
  CHECK(d.heartbeat_interval_seconds == 86400);
  CHECK(d.heartbeat_quiet_seconds == 21600);
  CHECK(d.presence_text == "Chatting as {bot_name}");

  for (const auto& [arg, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--reply-policy=sometimes", "--reply-policy"},
           {"--reply-policy=triage,triage", "--reply-policy"},
           {"--command-prefix=", "--command-prefix"},
           {"--command-prefix=# ", "--command-prefix"},
           {"--heartbeat-interval=0.5", "--heartbeat-interval"},
           {"--triage-max-tokens=0", "--triage-max-tokens"},
           {"--unprompted-cooldown=-1", "--unprompted-cooldown"},
           {"--presence-text=", "--presence-text"},
           {"--presence-text=" + std::string(129, 'x'), "--presence-text"},
           {"--admin-roles=a b", "--admin-roles"}}) {
    INFO(arg);
    const auto bad = parse({arg});
    REQUIRE(std::holds_alternative<parse_exit>(bad.result));
    CHECK(std::get<parse_exit>(bad.result).status == 2);
    CHECK(bad.err.find(flag) != std::string::npos);
  }
}

TEST_CASE("the group-chat options render and load back to the same values", "[group][config]") {
  const auto first = parse({"--reply-policy=always,redis=addressed", "--admin-roles=r1,r2",
                            "--presence-text=Here, as {bot_name}", "--triage-model=small", "--heartbeat-quiet=60"});
  REQUIRE(std::holds_alternative<parsed_command>(first.result));
  const auto text = render_config(std::get<parsed_command>(first.result).cfg);
  CHECK(text.find("reply-policy = \"always,redis=addressed\"") != std::string::npos);
  const auto path =
      (std::filesystem::temp_directory_path() / ("sg-group-" + std::to_string(::getpid()) + ".toml")).string();
  std::ofstream(path) << text;
  const auto again = parse({"--config", path});
  std::filesystem::remove(path);
  REQUIRE(std::holds_alternative<parsed_command>(again.result));
  const auto& cfg = std::get<parsed_command>(again.result).cfg;
  CHECK(cfg.reply_policy == "always,redis=addressed");
  CHECK(cfg.admin_roles == std::vector<std::string>{"r1", "r2"});
  CHECK(cfg.presence_text == "Here, as {bot_name}");
  CHECK(cfg.triage_model == "small");
  CHECK(cfg.heartbeat_quiet_seconds == 60);
  CHECK(render_config(cfg) == text);
}

TEST_CASE("addressed messages and DMs are for the bot, the policy and channel state decide the rest",
          "[group][policy]") {
  CHECK(is_for_bot(message("discord", "hi", true)));
  auto dm = message("discord", "hi");
  dm.extra.is_dm = true;
  CHECK(is_for_bot(dm));
  dm.reactions = "👍";  // a reaction in a DM is context
  CHECK_FALSE(is_for_bot(dm));
  CHECK_FALSE(is_for_bot(message("discord", "hi")));

  channel_gate open;
  CHECK(step_for_unaddressed(reply_policy::triage, open) == unaddressed_step::ask_triage);
  CHECK(step_for_unaddressed(reply_policy::always, open) == unaddressed_step::answer);
  CHECK(step_for_unaddressed(reply_policy::addressed, open) == unaddressed_step::keep_silent);
  channel_gate moded;
  moded.mode = reply_policy::always;  // the channel's mode wins over the platform's policy
  CHECK(step_for_unaddressed(reply_policy::addressed, moded) == unaddressed_step::answer);
  moded.mode = reply_policy::addressed;
  CHECK(step_for_unaddressed(reply_policy::always, moded) == unaddressed_step::keep_silent);
  channel_gate quiet;
  quiet.quiet = true;
  CHECK(step_for_unaddressed(reply_policy::always, quiet) == unaddressed_step::keep_silent);
  channel_gate cooling;
  cooling.cooling_down = true;
  CHECK(step_for_unaddressed(reply_policy::triage, cooling) == unaddressed_step::keep_silent);

  CHECK(platform_is_local("redis"));
  CHECK(platform_is_local("webchat"));
  CHECK_FALSE(platform_is_local("discord"));
}

TEST_CASE("a triage answer is yes only when its first word is yes", "[group][triage]") {
  for (const auto* yes : {"yes", "Yes.", "YES, they asked", "  yes\n", "**Yes**", "\"yes\"", "yes!"}) {
    INFO(yes);
    CHECK(triage_says_yes(yes));
  }
  for (const auto* no : {"no", "", "   ", "No, yes is wrong", "yesterday", "y", "maybe yes", "ye"}) {
    INFO(no);
    CHECK_FALSE(triage_says_yes(no));
  }
}

TEST_CASE("the triage request is short, ends with the new message and the question, and echo answers it by name",
          "[group][triage]") {
  std::vector<platform::cached_message> recent;
  for (int i = 1; i <= 9; ++i)
    recent.push_back({"m" + std::to_string(i), "u", i % 3 == 0 ? "Star" : "Bob", "line " + std::to_string(i),
                      1700000000.0 + i, i % 3 == 0, {}});
  recent.back().text = std::string(1000, 'z');
  auto m = message("discord", "does anyone know star charts?");
  const auto req = triage_request("Star", recent, m, "small-model", 5);
  CHECK(req.kind == llm::request_kind::triage);
  CHECK(req.bot_name == "Star");
  CHECK(req.model == "small-model");
  CHECK(req.max_tokens == std::optional<int>(5));
  CHECK(req.tools.empty());
  REQUIRE(req.messages.size() == 3);
  const auto& system = req.messages[0].content;
  CHECK(system.starts_with(triage_prompt_opening));
  CHECK(system.find("line 3") == std::string::npos);  // only the last 6
  CHECK(system.find("line 4") != std::string::npos);
  CHECK(system.find("line 8") != std::string::npos);
  CHECK(system.find(std::string(301, 'z')) == std::string::npos);  // a long message is cut
  CHECK(req.messages[1].role == llm::role::user);
  CHECK(req.messages[1].content == m.text);
  CHECK(req.messages[1].name == "Ada");
  CHECK(req.messages[2].content.find("Answer yes or no") != std::string::npos);

  // The echo model: yes exactly when the message names the bot, any case.
  CHECK(llm::echo_completion(req).content == "yes");
  m.text = "the weather is nice";
  CHECK(llm::echo_completion(triage_request("Star", recent, m, "", 5)).content == "no");
  m.text = "STAR, what now?";
  CHECK(llm::echo_completion(triage_request("star", {}, m, "", 5)).content == "yes");
  // A heartbeat gets nothing from echo; a status request is echoed (no tag: the fallback).
  llm::request heartbeat;
  heartbeat.kind = llm::request_kind::heartbeat;
  heartbeat.messages.push_back({llm::role::user, "anything"});
  CHECK(llm::echo_completion(heartbeat).content.empty());
  CHECK_FALSE(extract_dstatus(llm::echo_completion(status_request("Star", "")).content));
}

TEST_CASE("chat commands: the prefix and a known name, after an optional mention of the bot", "[group][commands]") {
  const auto parsed = [](std::string_view text, std::string_view prefix = "!") {
    return parse_chat_command(text, prefix, "Star");
  };
  REQUIRE(parsed("!help"));
  CHECK(parsed("!help")->name == command_name::help);
  CHECK(parsed("  !HELP  ")->name == command_name::help);
  CHECK(parsed("!forget please")->name == command_name::forget);
  auto mode = parsed("!mode  always ");
  REQUIRE(mode);
  CHECK(mode->name == command_name::mode);
  CHECK(mode->argument == "always");
  auto mentioned = parsed("<@123456> !mode triage");
  REQUIRE(mentioned);
  CHECK(mentioned->argument == "triage");
  auto named = parsed("@star: !quiet 5");
  REQUIRE(named);
  CHECK(named->name == command_name::quiet);
  CHECK(named->argument == "5");
  CHECK(parsed("?quiet 5", "?")->name == command_name::quiet);
  CHECK(parsed("sg:help", "sg:")->name == command_name::help);

  CHECK_FALSE(parsed("!unknown"));  // another bot's command: an ordinary message
  CHECK_FALSE(parsed("!helpme"));
  CHECK_FALSE(parsed("hello !help"));
  CHECK_FALSE(parsed("!"));
  CHECK_FALSE(parsed(""));
  CHECK_FALSE(parsed("!help", ""));  // no prefix: no commands
  CHECK_FALSE(parsed("?help"));

  CHECK(parse_quiet_minutes("30") == 30);
  CHECK(parse_quiet_minutes(" 30m ") == 30);
  CHECK(parse_quiet_minutes("0") == 0);
  CHECK(parse_quiet_minutes("10080") == 10080);
  for (const auto* bad : {"", "-1", "abc", "10081", "5.5", "99999999999999999999", "m"}) {
    INFO(bad);
    CHECK_FALSE(parse_quiet_minutes(bad));
  }
}

TEST_CASE("privilege: the admin marker or a configured role, on the web chat only listed users",
          "[group][commands]") {
  privilege_settings s;
  s.admin_roles = {"role-42"};
  s.webchat_admins = {"ada-web"};
  auto m = message("discord", "!mode always");
  CHECK_FALSE(is_privileged(m, s));
  m.extra.member_roles = {"role-1", "admin"};
  CHECK(is_privileged(m, s));
  m.extra.member_roles = {"role-42"};
  CHECK(is_privileged(m, s));
  m.extra.member_roles = {"role-43", ""};
  CHECK_FALSE(is_privileged(m, s));

  auto web = message("webchat", "!mode always");
  web.extra.member_roles = {"role-42"};  // platform role ids mean nothing on the web chat
  CHECK_FALSE(is_privileged(web, s));
  web.extra.member_roles = {"admin"};  // only the gateway sets it: an --admin invite's session
  CHECK(is_privileged(web, s));
  web.extra.member_roles.clear();
  web.user_id = "ada-web";
  CHECK(is_privileged(web, s));
  CHECK_FALSE(is_privileged(web, privilege_settings{}));
}

TEST_CASE("each command with and without privilege: the effect and a polite reply", "[group][commands]") {
  const auto plan = [](command_name n, std::string arg, bool privileged) {
    return plan_command(chat_command{n, std::move(arg)}, privileged, "!", reply_policy::triage);
  };
  const auto help = plan(command_name::help, "", false);
  CHECK(help.reply.find("!forget") != std::string::npos);
  CHECK(help.reply.find("!mode") != std::string::npos);
  CHECK(help.reply.find("!quiet") != std::string::npos);
  CHECK(help.reply.find("mode: triage") != std::string::npos);
  CHECK_FALSE(help.set_mode);

  const auto forget = plan(command_name::forget, "", false);  // anyone may
  CHECK(forget.forget);
  CHECK_FALSE(forget.reply.empty());

  const auto show = plan(command_name::mode, "", false);
  CHECK_FALSE(show.set_mode);
  CHECK(show.reply.find("triage") != std::string::npos);
  const auto refused = plan(command_name::mode, "always", false);
  CHECK_FALSE(refused.set_mode);
  CHECK(refused.reply.find("Sorry, only admins") != std::string::npos);
  const auto set = plan(command_name::mode, "Always", true);
  CHECK(set.set_mode == reply_policy::always);
  const auto bad_mode = plan(command_name::mode, "loud", true);
  CHECK_FALSE(bad_mode.set_mode);
  CHECK(bad_mode.reply.find("Usage: !mode") != std::string::npos);

  const auto quiet_refused = plan(command_name::quiet, "30", false);
  CHECK_FALSE(quiet_refused.quiet_minutes);
  CHECK(quiet_refused.reply.find("Sorry, only admins") != std::string::npos);
  const auto quiet = plan(command_name::quiet, "30", true);
  CHECK(quiet.quiet_minutes == 30);
  CHECK(quiet.reply.find("30 minutes") != std::string::npos);
  CHECK(plan(command_name::quiet, "0", true).quiet_minutes == 0);
  const auto bad_quiet = plan(command_name::quiet, "soon", true);
  CHECK_FALSE(bad_quiet.quiet_minutes);
  CHECK(bad_quiet.reply.find("Usage: !quiet") != std::string::npos);
}

TEST_CASE("the status line comes from the first <dstatus> tag, validated", "[group][presence]") {
  auto line = extract_dstatus("Here you go: <dstatus>🔭 watching the sky</dstatus> enjoy");
  REQUIRE(line);
  CHECK(line->emoji == "🔭");
  CHECK(line->text == "watching the sky");
  line = extract_dstatus("<DSTATUS>\n  🌙   reading\nold charts \t</DSTATUS>");
  REQUIRE(line);
  CHECK(line->emoji == "🌙");
  CHECK(line->text == "reading old charts");
  line = extract_dstatus("<dstatus>just thinking</dstatus>");
  REQUIRE(line);
  CHECK(line->emoji.empty());
  CHECK(line->text == "just thinking");
  line = extract_dstatus("<dstatus>☕</dstatus>");  // an emoji alone is the text
  REQUIRE(line);
  CHECK(line->text == "☕");
  const std::string longest(128, 'a');
  CHECK(extract_dstatus("<dstatus>" + longest + "</dstatus>"));
  CHECK(extract_dstatus("<dstatus>é" + std::string(127, 'a') + "</dstatus>"));  // characters, not bytes

  CHECK_FALSE(extract_dstatus("no tag at all"));
  CHECK_FALSE(extract_dstatus("<dstatus>never closed"));
  CHECK_FALSE(extract_dstatus("<dstatus>   </dstatus>"));
  CHECK_FALSE(extract_dstatus("<dstatus>" + longest + "a</dstatus>"));
  CHECK_FALSE(extract_dstatus("<dstatus>bad \xff\xfe bytes</dstatus>"));
  CHECK_FALSE(extract_dstatus(""));

  const auto fallback = fallback_status("Chatting as {bot_name} ({bot_name})", "Star");
  CHECK(fallback.text == "Chatting as Star (Star)");
  CHECK(fallback.emoji == "💬");
  const auto req = status_request("Star", "m");
  CHECK(req.kind == llm::request_kind::status);
  CHECK(req.messages.front().content.starts_with(status_prompt_opening));

  CHECK(utf8_length("abc") == 3);
  CHECK(utf8_length("🔭é") == 2);
  CHECK_FALSE(utf8_length("\xc0\x80"));  // overlong
  CHECK_FALSE(utf8_length("\xe2\x82"));  // truncated
}

TEST_CASE("a heartbeat reply of nothing sends nothing, and the heartbeat's timing", "[group][heartbeat]") {
  CHECK_FALSE(heartbeat_message(""));
  CHECK_FALSE(heartbeat_message("  \n"));
  CHECK_FALSE(heartbeat_message("(nothing)"));
  CHECK_FALSE(heartbeat_message("Nothing."));
  CHECK_FALSE(heartbeat_message("<nothing/>"));
  CHECK(heartbeat_message("  Anyone up for the meteor shower tonight?  ") ==
        std::optional<std::string>("Anyone up for the meteor shower tonight?"));
  CHECK(heartbeat_instruction("Star").starts_with(heartbeat_prompt_opening));

  heartbeat_settings s;  // 120 s, a day
  CHECK(heartbeat_tick(s) == 60s);
  CHECK(heartbeat_visit_ttl(s) == std::chrono::seconds(86400 - 8640));
  const auto lease = heartbeat_lease_settings(s);
  CHECK(lease.key == "sg:leader:heartbeat");
  CHECK(lease.ttl == 180s);
  s.initial_delay = 1s;
  s.interval = 3600s;
  CHECK(heartbeat_tick(s) == 1s);
  CHECK(heartbeat_lease_settings(s).check_interval == 1s);
  s.interval = 1s;
  CHECK(heartbeat_visit_ttl(s) == 1s);
}
