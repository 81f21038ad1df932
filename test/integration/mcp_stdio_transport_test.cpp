// The MCP stdio transport against a scripted server (test/support/mcp/scripted_server.py):
// a round trip, no interleaving of concurrent sends, exactly the configured environment and
// working directory, commands that cannot start, a crashing or killed child, a line over the
// size limit, close() and the destructor ending the child's whole process group, stderr
// apart from stdout.

#include "stargazer/tools/mcp/transport.hpp"

#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace mcp = stargazer::tools::mcp;

namespace {

std::string script_path() {
#ifdef STARGAZER_SOURCE_DIR
  return std::string(STARGAZER_SOURCE_DIR) + "/test/support/mcp/scripted_server.py";
#else
  return (fs::path(__FILE__).parent_path().parent_path() / "support" / "mcp" / "scripted_server.py").string();
#endif
}

// The scripted server with `flags`, its environment only what Python needs to leave alone.
mcp::stdio_settings scripted(std::vector<std::string> flags = {}) {
  mcp::stdio_settings s;
  s.server_name = "scripted";
  s.command = "/usr/bin/python3";
  s.args.push_back(script_path());
  s.args.insert(s.args.end(), flags.begin(), flags.end());
  s.environment = {"LC_ALL=C.UTF-8"};
  return s;
}

std::string request(int id, const std::string& method, const std::string& params = "{}") {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"method":")" + method + R"(","params":)" + params +
         "}";
}

std::string call(int id, const std::string& tool, const std::string& arguments = "{}") {
  return request(id, "tools/call", R"({"name":")" + tool + R"(","arguments":)" + arguments + "}");
}

std::string text_answer(int id, const std::string& text) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"result":{"content":[{"type":"text","text":")" + text +
         R"("}]}})";
}

struct temp_dir {
  temp_dir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("sg-mcp-stdio-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  fs::path path;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Whether `pid` is a live process (a zombie nobody has reaped yet counts as gone).
bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno != ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  const auto paren = content.rfind(')');
  return !(paren != std::string::npos && paren + 2 < content.size() && content[paren + 2] == 'Z');
}

bool reaped(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// One transport and what its handlers saw.
struct session {
  explicit session(mcp::stdio_settings settings)
      : transport(mcp::make_stdio_transport(io.get_executor(), std::move(settings))) {}
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  std::error_code open() {
    mcp::transport_handlers h;
    h.on_message = [this](std::string m) { messages.push_back(std::move(m)); };
    h.on_closed = [this](std::string why) { closed.push_back(std::move(why)); };
    return run_coro(io, transport->open(std::move(h)));
  }
  std::error_code send(const std::string& message) { return run_coro(io, transport->send(message)); }
  void close(std::chrono::milliseconds grace = 2s) { run_coro(io, transport->close(grace)); }
  bool wait_for(std::function<bool()> done, std::chrono::milliseconds timeout = 10s) {
    return run_coro(io, eventually(std::move(done), timeout), timeout + 5s);
  }
  bool wait_messages(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    return wait_for([this, n] { return messages.size() >= n; }, timeout);
  }
  bool wait_closed(std::chrono::milliseconds timeout = 10s) {
    return wait_for([this] { return !closed.empty(); }, timeout);
  }
  pid_t wait_pid_file(const std::string& path) {
    if (!wait_for([&] { return fs::exists(path); })) return -1;
    return static_cast<pid_t>(std::stol(read_file(path)));
  }

  asio::io_context io;
  std::vector<std::string> messages;
  std::vector<std::string> closed;
  std::unique_ptr<mcp::transport> transport;
};

}  // namespace

TEST_CASE("mcp stdio: a request and its answer round trip", "[mcp]") {
  session s(scripted());
  REQUIRE(!s.open());
  CHECK(s.transport->describe().rfind("stdio pid ", 0) == 0);
  CHECK(s.transport->describe().find("(/usr/bin/python3)") != std::string::npos);

  REQUIRE(!s.send(request(1, "initialize",
                          R"({"protocolVersion":"2025-06-18","capabilities":{},)"
                          R"("clientInfo":{"name":"stargazer-test","version":"1"}})")));
  REQUIRE(s.wait_messages(1));
  CHECK(s.messages[0].find(R"("id":1,)") != std::string::npos);
  CHECK(s.messages[0].find(R"("protocolVersion":"2025-06-18")") != std::string::npos);
  CHECK(s.messages[0].find(R"("listChanged":true)") != std::string::npos);

  REQUIRE(!s.send(R"({"jsonrpc":"2.0","method":"notifications/initialized"})"));
  REQUIRE(!s.send(request(2, "ping")));
  REQUIRE(s.wait_messages(2));
  CHECK(s.messages[1] == R"({"jsonrpc":"2.0","id":2,"result":{}})");
  CHECK(s.messages.size() == 2);  // the notification had no answer

  // A message with a newline in it would break the framing: refused, nothing sent.
  CHECK(s.send("{\"jsonrpc\":\"2.0\",\n\"id\":3,\"method\":\"ping\"}"));
  CHECK(run_coro(s.io, s.transport->open({})) == std::errc::already_connected);

  s.close();
  CHECK(s.closed.empty());  // not for close()
  CHECK(s.send(request(4, "ping")));
  s.close();  // again: nothing to do
}

TEST_CASE("mcp stdio: concurrent sends do not interleave", "[mcp]") {
  session s(scripted());
  REQUIRE(!s.open());
  // Each message is larger than a pipe's buffer: the writes are partial and wait for room.
  constexpr int count = 16;
  std::vector<std::string> texts;
  std::vector<std::error_code> results(count, std::make_error_code(std::errc::interrupted));
  int done = 0;
  for (int i = 0; i < count; ++i) {
    texts.push_back(std::string(100'000, static_cast<char>('a' + i)));
    asio::co_spawn(s.io, s.transport->send(call(i + 1, "echo", R"({"text":")" + texts.back() + R"("})")),
                   [&, i](std::exception_ptr e, std::error_code ec) {
                     CHECK(!e);
                     results[i] = ec;
                     ++done;
                   });
  }
  REQUIRE(s.wait_for([&] { return done == count && s.messages.size() == count; }, 20s));
  std::set<std::string> expected, got(s.messages.begin(), s.messages.end());
  for (int i = 0; i < count; ++i) {
    CHECK(!results[i]);
    expected.insert(text_answer(i + 1, texts[i]));
  }
  CHECK(got == expected);  // no parse error: every line reached the server whole
  s.close();
}

TEST_CASE("mcp stdio: the child gets exactly the configured environment, directory and descriptors", "[mcp]") {
  temp_dir dir;
  ::setenv("SG_MCP_TEST_NOT_INHERITED", "1", 1);
  // A descriptor of ours without close-on-exec: the child must not get it either.
  const int leaked = ::open("/dev/null", O_RDONLY);
  REQUIRE(leaked >= 0);

  auto settings = scripted({"--env-dump", "env.json", "--pid-file", "pid"});  // relative: in its directory
  settings.environment = {"LC_ALL=C.UTF-8", "SG_MCP_MARKER=a value with spaces", "EMPTY="};
  settings.working_directory = dir.path.string();
  session s(std::move(settings));
  REQUIRE(!s.open());
  ::close(leaked);
  ::unsetenv("SG_MCP_TEST_NOT_INHERITED");

  const pid_t pid = s.wait_pid_file(dir.file("pid"));
  REQUIRE(pid > 0);
  CHECK(read_file(dir.file("env.json")) ==
        R"({"EMPTY": "", "LC_ALL": "C.UTF-8", "SG_MCP_MARKER": "a value with spaces"})");

  // Its descriptors, while it is idle waiting for input: its stdin, stdout and stderr only.
  REQUIRE(!s.send(request(1, "ping")));
  REQUIRE(s.wait_messages(1));
  std::set<std::string> fds;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    fds.insert(e.path().filename().string());
  CHECK(fds == std::set<std::string>{"0", "1", "2"});
  s.close();
}

TEST_CASE("mcp stdio: a command that cannot start fails open() with its name", "[mcp]") {
  SECTION("not in PATH") {
    auto settings = scripted();
    settings.command = "sg-no-such-mcp-server";
    session s(std::move(settings));
    CHECK(s.open() == std::errc::no_such_file_or_directory);
    CHECK(s.transport->describe().find("mcp server 'scripted': cannot start 'sg-no-such-mcp-server'") !=
          std::string::npos);
    CHECK(s.send(request(1, "ping")));
    s.close();
  }
  SECTION("a path that does not exist: errno from the child's execve") {
    auto settings = scripted();
    settings.command = "/nonexistent/sg/mcp-server";
    session s(std::move(settings));
    CHECK(s.open() == std::errc::no_such_file_or_directory);
    CHECK(s.transport->describe().find(
              "mcp server 'scripted': cannot start '/nonexistent/sg/mcp-server': No such file or directory") !=
          std::string::npos);
  }
  SECTION("a file that is not executable") {
    temp_dir dir;
    const auto path = dir.file("not-executable");
    std::ofstream(path) << "#!/bin/sh\n";
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
    auto settings = scripted();
    settings.command = path;
    session s(std::move(settings));
    CHECK(s.open() == std::errc::permission_denied);
    CHECK(s.transport->describe().find("cannot start '" + path + "': Permission denied") != std::string::npos);
  }
  SECTION("a working directory that does not exist") {
    auto settings = scripted();
    settings.working_directory = "/nonexistent/sg/workdir";
    session s(std::move(settings));
    CHECK(s.open() == std::errc::no_such_file_or_directory);
    CHECK(s.transport->describe().find("/nonexistent/sg/workdir") != std::string::npos);
  }
  SECTION("a name found in PATH") {
    auto settings = scripted();
    settings.command = "python3";
    session s(std::move(settings));
    REQUIRE(!s.open());
    REQUIRE(!s.send(request(1, "ping")));
    CHECK(s.wait_messages(1));
    s.close();
  }
}

TEST_CASE("mcp stdio: the child ending closes the connection with why", "[mcp]") {
  temp_dir dir;
  SECTION("it crashes: its exit status") {
    session s(scripted({"--pid-file", dir.file("pid")}));
    REQUIRE(!s.open());
    const pid_t pid = s.wait_pid_file(dir.file("pid"));
    REQUIRE(!s.send(call(1, "crash")));
    REQUIRE(s.wait_closed());
    CHECK(s.closed == std::vector<std::string>{"exited with status 3"});
    CHECK(s.messages.empty());
    CHECK(reaped(pid));
    CHECK(s.send(request(2, "ping")));
    s.close();  // after it exited: nothing to do
    CHECK(s.closed.size() == 1);
  }
  SECTION("it is killed: the signal") {
    session s(scripted({"--pid-file", dir.file("pid")}));
    REQUIRE(!s.open());
    const pid_t pid = s.wait_pid_file(dir.file("pid"));
    REQUIRE(pid > 0);
    ::kill(pid, SIGKILL);
    REQUIRE(s.wait_closed());
    CHECK(s.closed == std::vector<std::string>{"killed by signal 9"});
  }
  SECTION("it exits after answering: the answer arrives first") {
    session s(scripted({"--exit-after", "1"}));
    REQUIRE(!s.open());
    REQUIRE(!s.send(call(1, "echo", R"({"text":"last words"})")));
    REQUIRE(s.wait_closed());
    CHECK(s.messages == std::vector<std::string>{text_answer(1, "last words")});
    CHECK(s.closed == std::vector<std::string>{"exited with status 0"});
  }
}

TEST_CASE("mcp stdio: a line over the size limit closes the connection and kills the child", "[mcp]") {
  temp_dir dir;
  SECTION("50 MiB against the default 16 MiB") {
    session s(scripted({"--pid-file", dir.file("pid")}));
    REQUIRE(!s.open());
    const pid_t pid = s.wait_pid_file(dir.file("pid"));
    REQUIRE(!s.send(call(1, "big", R"({"mib":50})")));
    REQUIRE(s.wait_closed(30s));
    CHECK(s.closed == std::vector<std::string>{"the server sent a message larger than 16777216 bytes"});
    CHECK(s.messages.empty());
    CHECK(reaped(pid));
  }
  SECTION("a small limit: a line under it passes, one over it does not") {
    auto settings = scripted();
    settings.max_message_bytes = 1000;
    session s(std::move(settings));
    REQUIRE(!s.open());
    REQUIRE(!s.send(call(1, "echo", R"({"text":")" + std::string(500, 'y') + R"("})")));
    REQUIRE(s.wait_messages(1));
    CHECK(s.messages[0] == text_answer(1, std::string(500, 'y')));
    REQUIRE(!s.send(call(2, "echo", R"({"text":")" + std::string(2000, 'z') + R"("})")));
    REQUIRE(s.wait_closed());
    CHECK(s.closed == std::vector<std::string>{"the server sent a message larger than 1000 bytes"});
    CHECK(s.messages.size() == 1);
  }
}

TEST_CASE("mcp stdio: close() and the destructor end the child and its process group", "[mcp]") {
  temp_dir dir;
  SECTION("close(): the child and a grandchild that ignores SIGTERM") {
    session s(scripted({"--pid-file", dir.file("pid"), "--grandchild-pid-file", dir.file("grandchild")}));
    REQUIRE(!s.open());
    const pid_t pid = s.wait_pid_file(dir.file("pid"));
    const pid_t grandchild = s.wait_pid_file(dir.file("grandchild"));
    REQUIRE(pid > 0);
    REQUIRE(grandchild > 0);
    CHECK(::getpgid(grandchild) == pid);
    CHECK(process_alive(grandchild));
    s.close(2s);
    CHECK(reaped(pid));
    CHECK(s.wait_for([&] { return !process_alive(grandchild); }, 5s));
    CHECK(s.closed.empty());
  }
  SECTION("close(): a child that ignores SIGTERM and the end of its input is killed after the grace") {
    session s(scripted({"--pid-file", dir.file("pid"), "--ignore-sigterm", "--ignore-eof"}));
    REQUIRE(!s.open());
    const pid_t pid = s.wait_pid_file(dir.file("pid"));
    REQUIRE(pid > 0);
    const auto start = std::chrono::steady_clock::now();
    s.close(300ms);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= 300ms);
    CHECK(took < 5s);
    CHECK(reaped(pid));
  }
  SECTION("the destructor without close(): killed and reaped") {
    session s(scripted({"--pid-file", dir.file("pid"), "--grandchild-pid-file", dir.file("grandchild")}));
    REQUIRE(!s.open());
    const pid_t pid = s.wait_pid_file(dir.file("pid"));
    const pid_t grandchild = s.wait_pid_file(dir.file("grandchild"));
    REQUIRE(!s.send(call(1, "sleep", R"({"seconds":30})")));  // a read and a request pending
    s.transport.reset();
    CHECK(reaped(pid));
    CHECK(s.wait_for([&] { return !process_alive(grandchild); }, 5s));
    CHECK(s.closed.empty());
  }
}

TEST_CASE("mcp stdio: stderr lines do not disturb stdout messages", "[mcp]") {
  session s(scripted());
  REQUIRE(!s.open());
  REQUIRE(!s.send(call(1, "stderr_flood", R"({"lines":2000})")));
  REQUIRE(!s.send(call(2, "echo", R"({"text":"after the flood"})")));
  REQUIRE(s.wait_messages(2));
  CHECK(s.messages ==
        std::vector<std::string>{text_answer(1, "wrote 2000 lines to stderr"), text_answer(2, "after the flood")});
  s.close();
}

TEST_CASE("mcp stdio: lines that are not JSON are handed over as they are", "[mcp]") {
  session s(scripted({"--garbage-first"}));
  REQUIRE(!s.open());
  REQUIRE(!s.send(request(1, "ping")));
  REQUIRE(s.wait_messages(4));
  CHECK(s.messages[0] == "garbage before the protocol");
  CHECK(s.messages[1] == "{not json either");
  CHECK(s.messages[2] == "\xff\xfe not UTF-8 \xc3");
  CHECK(s.messages[3] == R"({"jsonrpc":"2.0","id":1,"result":{}})");
  s.close();
}

TEST_CASE("mcp stdio: a notification reaches the server while a request waits", "[mcp]") {
  temp_dir dir;
  session s(scripted({"--cancel-log", dir.file("cancelled")}));
  REQUIRE(!s.open());
  REQUIRE(!s.send(call(7, "sleep", R"({"seconds":30})")));
  REQUIRE(!s.send(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"test"}})"));
  REQUIRE(s.wait_for([&] { return read_file(dir.file("cancelled")) == "7\n"; }));
  REQUIRE(!s.send(request(8, "ping")));
  REQUIRE(s.wait_messages(1));
  CHECK(s.messages == std::vector<std::string>{R"({"jsonrpc":"2.0","id":8,"result":{}})"});  // none for 7
  s.close();
}

TEST_CASE("mcp stdio: a child that closes its stdout but stays is killed after 2 s", "[mcp]") {
  mcp::stdio_settings settings;
  settings.server_name = "shell";
  settings.command = "/bin/sh";
  settings.args = {"-c", "echo '{\"first\":1}'; exec >&-; sleep 30"};
  settings.environment = {"PATH=/usr/bin:/bin"};
  session s(std::move(settings));
  REQUIRE(!s.open());
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(s.wait_closed());
  CHECK(std::chrono::steady_clock::now() - start >= 1500ms);
  CHECK(s.messages == std::vector<std::string>{R"({"first":1})"});
  CHECK(s.closed == std::vector<std::string>{"closed its stdout"});
}

TEST_CASE("mcp stdio: long, binary and CRLF lines", "[mcp]") {
  // A 10 000-byte stderr line (logged cut at 4 KiB), one with bytes that are not UTF-8 and
  // control characters (logged replaced), CRLF and empty lines on stdout.
  mcp::stdio_settings settings;
  settings.server_name = "shell";
  settings.command = "/bin/sh";
  settings.args = {"-c",
                   "head -c 10000 /dev/zero | tr '\\000' e >&2; echo >&2; printf '\\377\\033[31m red\\n' >&2; "
                   "printf '{\"a\":1}\\r\\n\\n\\r\\n{\"b\":2}\\n'; sleep 30"};
  settings.environment = {"PATH=/usr/bin:/bin"};
  session s(std::move(settings));
  REQUIRE(!s.open());
  REQUIRE(s.wait_messages(2));
  CHECK(s.messages == std::vector<std::string>{R"({"a":1})", R"({"b":2})"});
  s.close(100ms);
  CHECK(s.closed.empty());
}
