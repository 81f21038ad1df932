#include "roles/options.hpp"
#include "stargazer/tools/mcp/protocol.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace stargazer;

namespace {

struct parse_outcome {
  std::variant<parsed_command, parse_exit> result;
  std::string out, err;
};

parse_outcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "stargazer");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto r = parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err);
  return {std::move(r), out.str(), err.str()};
}

// Sets an environment variable for one scope.
struct scoped_env {
  scoped_env(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~scoped_env() { ::unsetenv(name_); }
  const char* name_;
};

struct temp_file {
  explicit temp_file(const std::string& text) {
    path = (std::filesystem::temp_directory_path() / ("sg-config-" + std::to_string(::getpid()) + ".toml")).string();
    std::ofstream(path) << text;
  }
  ~temp_file() { std::filesystem::remove(path); }
  std::string path;
};

const config& cfg_of(const parse_outcome& o) { return std::get<parsed_command>(o.result).cfg; }
int status_of(const parse_outcome& o) { return std::get<parse_exit>(o.result).status; }

}  // namespace

TEST_CASE("defaults apply when nothing is given", "[config]") {
  auto o = parse({});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& c = cfg_of(o);
  CHECK(c.process_role == role::standalone);
  CHECK(c.http_port == 8080);
  CHECK(c.stream_maxlen == 100000);
  CHECK(c.llm_provider == "auto");
  CHECK(c.effective_llm_provider() == "echo");
  CHECK_FALSE(c.node_id.empty());  // generated
}

TEST_CASE("precedence is flag > env > file > default", "[config]") {
  temp_file file("http-port = 7001\nhttp-host = \"10.0.0.1\"\nlog-level = \"debug\"\nllm-model = \"file-model\"\n");
  scoped_env env_port("SG_HTTP_PORT", "7002");
  scoped_env env_host("SG_HTTP_HOST", "10.0.0.2");
  auto o = parse({"--config", file.path, "--http-port", "7003"});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& c = cfg_of(o);
  CHECK(c.http_port == 7003);        // flag beats env and file
  CHECK(c.http_host == "10.0.0.2");  // env beats file
  CHECK(c.log_level == "debug");     // file beats default
  CHECK(c.llm_model == "file-model");
  CHECK(c.redis_sentinel_master == "mymaster");  // default
}

TEST_CASE("SG_CONFIG names the file and the role can be set there", "[config]") {
  temp_file file("role = \"worker\"\nredis_sentinels = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"]\n");
  scoped_env env("SG_CONFIG", file.path.c_str());
  auto o = parse({});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  CHECK(cfg_of(o).process_role == role::worker);
  CHECK(cfg_of(o).redis_sentinels == std::vector<std::string>{"127.0.0.1:26379", "127.0.0.1:26380"});
}

TEST_CASE("secrets come from env or file and are redacted when printed", "[config]") {
  temp_file file("admin-api-key = \"file-admin\"\nllm-api-key = \"file-llm\"\nredis-url = \"redis://u:pw@h:1\"\n");
  scoped_env env("SG_LLM_API_KEY", "env-llm");
  auto o = parse({"--config", file.path, "config", "print"});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& pc = std::get<parsed_command>(o.result);
  CHECK(pc.what == command::config_print);
  CHECK(pc.cfg.admin_api_key == "file-admin");
  CHECK(pc.cfg.llm_api_key == "env-llm");
  const auto text = render_config(pc.cfg);
  CHECK(text.find("file-admin") == std::string::npos);
  CHECK(text.find("env-llm") == std::string::npos);
  CHECK(text.find("pw") == std::string::npos);
  CHECK(text.find("admin-api-key = \"<redacted>\"") != std::string::npos);
  CHECK(text.find("redis-url = \"redis://u:***@h:1\"") != std::string::npos);
}

TEST_CASE("the LLM API key has no command-line flag", "[config]") {
  auto o = parse({"--llm-api-key", "x"});
  REQUIRE(std::holds_alternative<parse_exit>(o.result));
  CHECK(status_of(o) == 2);
}

TEST_CASE("bad input exits 2 with one line naming the option", "[config]") {
  struct bad_case {
    std::vector<std::string> args;
    std::string names;
  };
  const std::vector<bad_case> cases = {
      {{"--role", "janitor"}, "--role"},
      {{"--http-port", "http"}, "--http-port"},
      {{"--http-port", "70000"}, "--http-port"},
      {{"--bogus"}, "--bogus"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--log-format", "xml"}, "--log-format"},
      {{"--redis-url", "http://x"}, "--redis-url"},
      {{"--redis-sentinels", "nohost"}, "--redis-sentinels"},
      {{"--llm-provider", "magic"}, "--llm-provider"},
      {{"--config", "/nonexistent/stargazer.toml"}, "--config"},
      {{"--webchat-allowed-origins", "evil.example"}, "--webchat-allowed-origins"},
      {{"--webchat-allowed-origins", "https://a.example/path"}, "--webchat-allowed-origins"},
      {{"--webchat-enabled", "maybe"}, "--webchat-enabled"},
      {{"--http-header-timeout", "0"}, "--http-header-timeout"},
      {{"--http-max-connections-per-ip=many"}, "--http-max-connections-per-ip"},
      {{"--http-trusted-proxies", "10.0.0.0/8,proxy.local"}, "--http-trusted-proxies"},
      {{"--http-trusted-proxies", "10.0.0.0/40"}, "--http-trusted-proxies"},
  };
  for (const auto& c : cases) {
    INFO(c.names);
    auto o = parse(c.args);
    REQUIRE(std::holds_alternative<parse_exit>(o.result));
    CHECK(status_of(o) == 2);
    CHECK(o.err.find(c.names) != std::string::npos);
    CHECK(std::count(o.err.begin(), o.err.end(), '\n') == 1);
  }
}

TEST_CASE("a config file with an unknown key or a bad value is refused", "[config]") {
  {
    temp_file file("http-prot = 1\n");
    auto o = parse({"--config", file.path});
    REQUIRE(std::holds_alternative<parse_exit>(o.result));
    CHECK(status_of(o) == 2);
    CHECK(o.err.find("http-prot") != std::string::npos);
  }
  {
    temp_file file("http-port = \"many\"\n");
    auto o = parse({"--config", file.path});
    REQUIRE(std::holds_alternative<parse_exit>(o.result));
    CHECK(status_of(o) == 2);
    CHECK(o.err.find("http-port") != std::string::npos);
  }
}

TEST_CASE("stargazer --help lists roles and options with defaults, and --version prints the version", "[config]") {
  auto help = parse({"--help"});
  REQUIRE(std::holds_alternative<parse_exit>(help.result));
  CHECK(status_of(help) == 0);
  for (const char* name : {"--role", "--redis-url", "--redis-sentinels", "--redis-sentinel-master", "--http-host",
                           "--http-port", "--data-dir", "--log-level", "--log-format", "--node-id",
                           "--stream-maxlen", "--admin-api-key", "--llm-provider", "--llm-base-url", "--llm-model",
                           "--webchat-enabled", "--webchat-allowed-origins",
                           "SG_HTTP_PORT", "gateway", "standalone", "8080", "100000"}) {
    INFO(name);
    CHECK(help.out.find(name) != std::string::npos);
  }
  auto version = parse({"--version"});
  CHECK(status_of(version) == 0);
  CHECK(version.out.find("stargazer ") == 0);
}

TEST_CASE("dlq subcommands parse into the command and its options, not the config", "[config][dlq]") {
  auto list = parse({"dlq", "list", "--json", "--count", "5", "--redis-url", "redis://h:1"});
  REQUIRE(std::holds_alternative<parsed_command>(list.result));
  const auto& l = std::get<parsed_command>(list.result);
  CHECK(l.what == command::dlq_list);
  CHECK(l.dlq.json);
  CHECK(l.dlq.count == 5);
  CHECK(l.dlq.stream.empty());
  CHECK(l.cfg.redis_url == "redis://h:1");

  auto replay = parse({"--stream-maxlen", "5000", "dlq", "replay", "--stream", "s", "--id", "1-0", "2-3", "--id", "4-5"});
  REQUIRE(std::holds_alternative<parsed_command>(replay.result));
  const auto& r = std::get<parsed_command>(replay.result);
  CHECK(r.what == command::dlq_replay);
  CHECK(r.dlq.stream == "s");
  CHECK(r.dlq.ids == std::vector<std::string>{"1-0", "2-3", "4-5"});
  CHECK_FALSE(r.dlq.all);
  CHECK(r.cfg.stream_maxlen == 5000);

  auto purge = parse({"dlq", "purge", "--all"});
  REQUIRE(std::holds_alternative<parsed_command>(purge.result));
  CHECK(std::get<parsed_command>(purge.result).what == command::dlq_purge);
  CHECK(std::get<parsed_command>(purge.result).dlq.all);

  for (const auto& bad : std::vector<std::vector<std::string>>{{"dlq"},
                                                                {"dlq", "purge"},
                                                                {"dlq", "replay", "--id", "1-0", "--all"},
                                                                {"dlq", "replay", "--id", "x-1"},
                                                                {"dlq", "list", "--count", "0"}}) {
    auto o = parse(bad);
    INFO(bad.back());
    REQUIRE(std::holds_alternative<parse_exit>(o.result));
    CHECK(status_of(o) == 2);
    CHECK(o.err.rfind("stargazer: error: ", 0) == 0);
  }
}

TEST_CASE("slow-client options: defaults, flags, environment, and a rendered config loads again",
          "[config][http]") {
  auto defaults = parse({});
  REQUIRE(std::holds_alternative<parsed_command>(defaults.result));
  CHECK(cfg_of(defaults).http_header_timeout_seconds == 10.0);
  CHECK(cfg_of(defaults).http_max_connections_per_ip == 64);
  CHECK(cfg_of(defaults).http_trusted_proxies.empty());

  scoped_env env("SG_HTTP_TRUSTED_PROXIES", "10.0.0.0/8,::1");
  auto o = parse({"--http-header-timeout", "2.5", "--http-max-connections-per-ip", "0"});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& c = cfg_of(o);
  CHECK(c.http_header_timeout_seconds == 2.5);
  CHECK(c.http_max_connections_per_ip == 0);
  CHECK(c.http_trusted_proxies == std::vector<std::string>{"10.0.0.0/8", "::1"});

  const auto text = render_config(c);
  CHECK(text.find(R"(http-trusted-proxies = ["10.0.0.0/8", "::1"])") != std::string::npos);
  ::unsetenv("SG_HTTP_TRUSTED_PROXIES");
  temp_file file(text);
  auto again = parse({"--config", file.path});
  REQUIRE(std::holds_alternative<parsed_command>(again.result));
  CHECK(cfg_of(again).http_header_timeout_seconds == 2.5);
  CHECK(cfg_of(again).http_max_connections_per_ip == 0);
  CHECK(cfg_of(again).http_trusted_proxies == c.http_trusted_proxies);
}

TEST_CASE("web chat options: defaults, flags, environment, and a rendered config loads again", "[config][webchat]") {
  auto defaults = parse({});
  REQUIRE(std::holds_alternative<parsed_command>(defaults.result));
  CHECK(cfg_of(defaults).webchat_enabled);
  CHECK(cfg_of(defaults).webchat_allowed_origins.empty());

  scoped_env env("SG_WEBCHAT_ENABLED", "false");
  auto o = parse({"--webchat-allowed-origins", "https://chat.example.com,http://localhost:3000"});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& c = cfg_of(o);
  CHECK_FALSE(c.webchat_enabled);
  CHECK(c.webchat_allowed_origins == std::vector<std::string>{"https://chat.example.com", "http://localhost:3000"});

  const auto text = render_config(c);
  CHECK(text.find("webchat-enabled = false") != std::string::npos);
  CHECK(text.find(R"(webchat-allowed-origins = ["https://chat.example.com", "http://localhost:3000"])") !=
        std::string::npos);
  ::unsetenv("SG_WEBCHAT_ENABLED");
  temp_file file(text);
  auto again = parse({"--config", file.path});
  REQUIRE(std::holds_alternative<parsed_command>(again.result));
  CHECK_FALSE(cfg_of(again).webchat_enabled);
  CHECK(cfg_of(again).webchat_allowed_origins == c.webchat_allowed_origins);
  CHECK(parse({"--webchat-allowed-origins", "*"}).err.empty());
}

TEST_CASE("docs/operations.md documents every option --help lists, with its environment variable", "[config][docs]") {
  const auto help = parse({"--help"}).out;
  std::ifstream file(std::string(STARGAZER_SOURCE_DIR) + "/docs/operations.md");
  REQUIRE(file);
  std::stringstream docs;
  docs << file.rdbuf();
  std::size_t checked = 0;
  for (std::size_t at = help.find("  --"); at != std::string::npos; at = help.find("  --", at + 1)) {
    const auto end = help.find_first_of(" =,\n", at + 2);  // the first of a name's aliases
    const auto option = help.substr(at + 2, end - at - 2);
    if (option == "--help" || option == "--version" || option == "--help-all") continue;
    INFO(option);
    CHECK(docs.str().find("`" + option + "`") != std::string::npos);
    ++checked;
  }
  CHECK(checked > 30);
  for (std::size_t at = help.find("(Env:SG_"); at != std::string::npos; at = help.find("(Env:SG_", at + 1)) {
    const auto name = help.substr(at + 5, help.find(')', at) - at - 5);
    INFO(name);
    CHECK(docs.str().find("`" + name + "`") != std::string::npos);
  }
}

TEST_CASE("REST client subcommands parse into the command and its options", "[config][cli]") {
  scoped_env admin("SG_ADMIN_API_KEY", "adm");

  auto create = parse({"instance", "create", "--id", "bot1", "--name", "Bot One", "--url", "http://gw:9000/sg"});
  REQUIRE(std::holds_alternative<parsed_command>(create.result));
  const auto& c = std::get<parsed_command>(create.result);
  CHECK(c.what == command::instance_create);
  CHECK(c.client.instance == "bot1");
  CHECK(c.client.name == "Bot One");
  CHECK(c.client.url == "http://gw:9000/sg");
  CHECK(c.cfg.admin_api_key == "adm");

  auto del = parse({"instance", "delete", "bot1", "--json", "--admin-key", "other"});
  REQUIRE(std::holds_alternative<parsed_command>(del.result));
  const auto& d = std::get<parsed_command>(del.result);
  CHECK(d.what == command::instance_delete);
  CHECK(d.client.instance == "bot1");
  CHECK(d.client.json);
  CHECK(d.client.url == "http://127.0.0.1:8080");
  CHECK(d.cfg.admin_api_key == "other");

  auto add = parse({"user", "add", "--instance", "bot1", "ada"});
  REQUIRE(std::holds_alternative<parsed_command>(add.result));
  const auto& a = std::get<parsed_command>(add.result);
  CHECK(a.what == command::user_add);
  CHECK(a.client.user_id == "ada");
  CHECK(a.client.name == "ada");  // the display name defaults to the id

  CHECK(std::get<parsed_command>(parse({"instance", "list"}).result).what == command::instance_list);
  CHECK(std::get<parsed_command>(parse({"user", "list", "--instance", "i"}).result).what == command::user_list);
  CHECK(std::get<parsed_command>(parse({"user", "remove", "--instance", "i", "u"}).result).what ==
        command::user_remove);
}

TEST_CASE("chat takes SG_URL, SG_INSTANCE and SG_INSTANCE_KEY, and flags win over them", "[config][cli]") {
  scoped_env url("SG_URL", "http://gw:1");
  scoped_env instance("SG_INSTANCE", "from-env");
  scoped_env key("SG_INSTANCE_KEY", "k-env");
  const char* user = std::getenv("USER");
  const std::string login = user != nullptr && *user != '\0' ? user : "terminal";

  auto from_env = parse({"chat"});
  REQUIRE(std::holds_alternative<parsed_command>(from_env.result));
  const auto& e = std::get<parsed_command>(from_env.result);
  CHECK(e.what == command::chat);
  CHECK(e.client.url == "http://gw:1");
  CHECK(e.client.instance == "from-env");
  CHECK(e.client.key == "k-env");
  CHECK(e.client.user_id == login);  // both default to $USER
  CHECK(e.client.user_name == login);

  auto flags = parse({"chat", "--url", "http://gw:2", "--instance", "i", "--key", "k", "--user-id", "u1",
                      "--user-name", "Ada L"});
  REQUIRE(std::holds_alternative<parsed_command>(flags.result));
  const auto& f = std::get<parsed_command>(flags.result);
  CHECK(f.client.url == "http://gw:2");
  CHECK(f.client.instance == "i");
  CHECK(f.client.key == "k");
  CHECK(f.client.user_id == "u1");
  CHECK(f.client.user_name == "Ada L");
}

TEST_CASE("REST client subcommands refuse bad usage with status 2 naming the flag", "[config][cli]") {
  const auto refused = [](std::vector<std::string> args, const std::string& flag) {
    auto o = parse(std::move(args));
    INFO(o.err);
    REQUIRE(std::holds_alternative<parse_exit>(o.result));
    CHECK(status_of(o) == 2);
    CHECK(o.err.find(flag) != std::string::npos);
  };
  {
    scoped_env admin("SG_ADMIN_API_KEY", "adm");
    refused({"chat", "--instance", "i", "--url", "ftp://x"}, "--url");
    refused({"user", "add", "ada"}, "--instance");
    refused({"user", "add", "--instance", "i"}, "USER_ID");
    refused({"instance", "delete"}, "ID");
    refused({"instance", "list", "--bogus"}, "--bogus");
    refused({"instance"}, "subcommand");
  }
  refused({"instance", "list"}, "--admin-key");
  refused({"chat", "--instance", "i"}, "--key");
  {
    // A bad SG_URL fails only the client commands, never a role.
    scoped_env url("SG_URL", "not a url");
    refused({"instance", "list", "--admin-key", "a"}, "--url");
    CHECK(std::holds_alternative<parsed_command>(parse({"--role", "worker"}).result));
  }
}

// Found by test/fuzz/fuzz_config.cpp: CLI11 2.1 reads quoted values verbatim, so the
// backslash escapes render_config wrote grew by one level per reload; and a sentinel
// port with trailing text passed validation.
TEST_CASE("render_config output loads back to the same values, quotes and backslashes included", "[config][fuzz]") {
  auto o = parse({"--bot-name", R"(Star "the" bot)", "--data-dir", R"(C:\data)", "--llm-model", R"(it's "x")"});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto text = render_config(cfg_of(o));
  CHECK(text.find(R"(bot-name = 'Star "the" bot')") != std::string::npos);
  temp_file file(text);
  auto again = parse({"--config", file.path});
  REQUIRE(std::holds_alternative<parsed_command>(again.result));
  CHECK(cfg_of(again).bot_name == R"(Star "the" bot)");
  CHECK(cfg_of(again).data_dir == R"(C:\data)");
  CHECK(cfg_of(again).llm_model == R"(it's "x")");
  CHECK(render_config(cfg_of(again)) == text);

  CHECK(status_of(parse({"--redis-sentinels", "127.0.0.1:26379x"})) == 2);
  // Found by fuzz_config: control bytes in a host loaded, then did not survive render_config.
  CHECK(status_of(parse({"--redis-sentinels", std::string("ho\tst:26379")})) == 2);
  CHECK(status_of(parse({"--redis-sentinels", std::string("ho\0st:26379", 11)})) == 2);
  CHECK(std::holds_alternative<parsed_command>(parse({"--redis-sentinels", "127.0.0.1:26379"}).result));
}

TEST_CASE("the process is named by --node-id, and --instance-id is its deprecated alias", "[config]") {
  auto named = parse({"--node-id=worker-7"});
  REQUIRE(std::holds_alternative<parsed_command>(named.result));
  CHECK(std::get<parsed_command>(named.result).cfg.node_id == "worker-7");
  CHECK(named.err.empty());

  auto old = parse({"--instance-id=worker-8"});
  REQUIRE(std::holds_alternative<parsed_command>(old.result));
  CHECK(std::get<parsed_command>(old.result).cfg.node_id == "worker-8");
  CHECK(old.err.find("--instance-id (SG_INSTANCE_ID) is deprecated; use --node-id") != std::string::npos);

  auto both = parse({"--instance-id=old", "--node-id=new"});
  REQUIRE(std::holds_alternative<parsed_command>(both.result));
  CHECK(std::get<parsed_command>(both.result).cfg.node_id == "new");
}

TEST_CASE("MCP servers come as JSON or as [mcp-servers.NAME] tables, and bad ones name the field", "[config][mcp]") {
  temp_file file(R"([mcp-servers.files]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/a b"]
env = ["PATH", "LOG_LEVEL=warn"]
timeout = 20

[mcp-servers.search]
url = "https://search.internal/mcp"
bearer_token_env = "SG_SEARCH_TOKEN"
enabled = false

[mcp-servers.search.headers]
X-Team = "support"
)");
  auto o = parse({"--config", file.path});
  INFO(o.err);
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  auto servers = tools::mcp::parse_server_configs(cfg_of(o).mcp_servers);
  REQUIRE(std::holds_alternative<std::vector<tools::mcp::server_config>>(servers));
  const auto& list = std::get<std::vector<tools::mcp::server_config>>(servers);
  REQUIRE(list.size() == 2);
  CHECK(list[0].name == "files");
  CHECK(list[0].args == std::vector<std::string>{"-y", "@modelcontextprotocol/server-filesystem", "/srv/a b"});
  CHECK(list[0].env == std::vector<std::string>{"PATH", "LOG_LEVEL=warn"});
  CHECK(list[0].timeout == std::chrono::seconds(20));
  CHECK(list[1].url == "https://search.internal/mcp");
  CHECK(list[1].headers.at("X-Team") == "support");
  CHECK_FALSE(list[1].enabled);

  // The rendered configuration loads back to the same servers.
  temp_file rendered(render_config(cfg_of(o)));
  auto again = parse({"--config", rendered.path});
  REQUIRE(std::holds_alternative<parsed_command>(again.result));
  CHECK(cfg_of(again).mcp_servers == cfg_of(o).mcp_servers);

  temp_file bad("[mcp-servers.files]\ncommand = \"npx\"\nshell = true\n");
  auto refused = parse({"--config", bad.path});
  REQUIRE(std::holds_alternative<parse_exit>(refused.result));
  CHECK(status_of(refused) == 2);
  CHECK(refused.err.find("server 'files' has an unknown field 'shell'") != std::string::npos);

  auto flag = parse({"--mcp-servers", R"({"x": {"command": "a", "url": "http://h"}})"});
  REQUIRE(std::holds_alternative<parse_exit>(flag.result));
  CHECK(flag.err.find("--mcp-servers: server 'x' needs exactly one of") != std::string::npos);
}
