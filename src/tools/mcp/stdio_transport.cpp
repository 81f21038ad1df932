// The MCP stdio transport (transport.hpp; MCP "Transports", stdio): the server is our child
// process, started without a shell; we write one JSON-RPC message a line to its stdin and
// read one a line from its stdout; its stderr is logged under its name.
//
// The child: its own process group (we signal the group: what it started dies with it),
// PR_SET_PDEATHSIG so it dies with us, exactly the configured environment, no descriptor
// of ours but its three pipes. A failing chdir or execve reaches open() through a
// close-on-exec pipe carrying errno.
//
// Lifetime: what the background coroutines (stdout and stderr readers) share with the
// transport lives in a shared_ptr'd `child_state`. Destroying the transport closes the
// descriptors (pending reads complete with operation_aborted and touch only that state),
// kills the group and reaps the child, blocking (it dies at once).

#include "stargazer/tools/mcp/transport.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/strings.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/buffer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <string_view>

namespace stargazer::tools::mcp {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t stdout_chunk = 64 * 1024;
constexpr std::size_t stderr_chunk = 8 * 1024;
constexpr std::size_t stderr_line_cap = 4 * 1024;
constexpr int stderr_lines_per_second = 50;
constexpr std::chrono::milliseconds reap_poll{20};
constexpr std::chrono::milliseconds exit_after_eof{2000};   // the child closed its stdout: time to exit
constexpr std::chrono::milliseconds exit_after_kill{5000};  // SIGKILL is immediate unless in the kernel

std::error_code os_error(int e) { return {e, std::system_category()}; }

// ---- the child process ----------------------------------------------------------------------

// A descriptor closed when the holder goes out of scope (error paths of open()).
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

// Both ends close-on-exec: only what the child dup2's onto 0..2 survives its execve.
int make_pipe(unique_fd& read_end, unique_fd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return 0;
}

// Moves `fd` to a number >= 3, so that the child's dup2 onto 0, 1, 2 cannot clobber
// another of the descriptors it still needs (when we run with a standard descriptor closed).
int lift_above_stdio(unique_fd& fd) {
  if (fd.get() >= 3) return 0;
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return errno;
  fd.reset(moved);
  return 0;
}

int set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return errno;
  return 0;
}

// `program` in the PATH of our environment (the child's PATH, if it has one, is its own).
std::string find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (;;) {
    const auto colon = dirs.find(':');
    const auto dir = dirs.substr(0, colon);
    std::error_code ec;
    auto candidate = std::filesystem::absolute(std::filesystem::path(dir.empty() ? "." : std::string(dir)) / program, ec);
    struct stat st {};
    if (!ec && ::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate.string();
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return {};
}

// What the child writes to the report pipe when it cannot become the server.
struct child_failure {
  int stage;
  int error;
};
enum : int { stage_setup = 1, stage_chdir = 2, stage_exec = 3 };

// Everything the child needs, prepared before fork: it only makes async-signal-safe calls.
struct child_plan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;  // null: ours
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1, report_fd = -1;  // all >= 3
  pid_t parent = -1;
  int max_fd = 1024;  // for the fallback close loop
  sigset_t no_signals;
};

[[noreturn]] void child_fail(int report_fd, int stage) {
  const child_failure f{stage, errno};
  [[maybe_unused]] const auto n = ::write(report_fd, &f, sizeof f);
  ::_exit(127);
}

void close_fds_except(int keep, int max_fd) {
#ifdef SYS_close_range
  const bool low = keep == 3 || ::syscall(SYS_close_range, 3u, static_cast<unsigned>(keep - 1), 0u) == 0;
  if (low && ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u) == 0) return;
#endif
  for (int fd = 3; fd < max_fd; ++fd)
    if (fd != keep) ::close(fd);
}

[[noreturn]] void run_child(const child_plan& p) {
  // Default dispositions (an ignored signal would stay ignored across execve); all signals
  // stay blocked, as the parent blocked them around fork, until just before execve.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  if (::setpgid(0, 0) != 0) child_fail(p.report_fd, stage_setup);
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(p.report_fd, stage_setup);
  if (::getppid() != p.parent) ::_exit(127);  // we died before prctl: nobody to serve
  if (::dup2(p.stdin_fd, 0) < 0 || ::dup2(p.stdout_fd, 1) < 0 || ::dup2(p.stderr_fd, 2) < 0)
    child_fail(p.report_fd, stage_setup);
  close_fds_except(p.report_fd, p.max_fd);
  if (p.cwd != nullptr && ::chdir(p.cwd) != 0) child_fail(p.report_fd, stage_chdir);
  ::sigprocmask(SIG_SETMASK, &p.no_signals, nullptr);
  ::execve(p.path, p.argv, p.envp);
  child_fail(p.report_fd, stage_exec);
}

// ---- the state the transport shares with its coroutines ---------------------------------------

struct write_waiter {
  explicit write_waiter(const asio::any_io_executor& ex) : wake(ex, asio::steady_timer::time_point::max()) {}
  asio::steady_timer wake;  // cancelled to wake the waiter
  bool granted = false;     // woken because the write turn is now its own
};

struct child_state {
  child_state(asio::any_io_executor e, stdio_settings s)
      : ex(std::move(e)), settings(std::move(s)), log("mcp:" + settings.server_name), in(ex), out(ex), err(ex) {}

  asio::any_io_executor ex;
  stdio_settings settings;
  log::logger log;
  transport_handlers handlers;
  asio::posix::stream_descriptor in, out, err;  // our ends of its stdin, stdout, stderr

  pid_t pid = -1;  // also its process group's id
  std::string path;     // what was executed
  std::string failure;  // why open() failed
  bool open_called = false;
  bool started = false;
  bool reaped = false;
  bool status_known = false;
  int wait_status = 0;
  bool killed_by_us = false;
  bool closing = false;   // close() or destruction: no handler is called any more
  bool finished = false;  // on_closed was called

  bool writing = false;  // a send() holds the write turn
  std::deque<std::shared_ptr<write_waiter>> write_waiters;
};

void close_quietly(asio::posix::stream_descriptor& d) {
  boost::system::error_code ignored;
  d.close(ignored);
}

void signal_group(child_state& s, int sig) {
  if (s.pid <= 0 || s.reaped) return;  // once reaped, the group id may belong to someone else
  if (sig == SIGKILL) s.killed_by_us = true;
  if (::kill(-s.pid, sig) != 0 && errno == ESRCH) ::kill(s.pid, sig);
}

// Whether the child is gone. When it has exited, what it left in its group is killed first
// (its unreaped zombie keeps the group's id from being reused meanwhile), then it is reaped.
bool try_reap(child_state& s) {
  if (s.pid <= 0 || s.reaped) return true;
  siginfo_t info{};
  int rc = 0;
  do rc = ::waitid(P_PID, static_cast<id_t>(s.pid), &info, WEXITED | WNOHANG | WNOWAIT);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {  // ECHILD: reaped by someone else (SIGCHLD ignored in this process)
    s.reaped = true;
    return true;
  }
  if (info.si_pid == 0) return false;
  ::kill(-s.pid, SIGKILL);
  int status = 0;
  pid_t r = 0;
  do r = ::waitpid(s.pid, &status, 0);
  while (r < 0 && errno == EINTR);
  if (r == s.pid) {
    s.wait_status = status;
    s.status_known = true;
  }
  s.reaped = true;
  return true;
}

// SIGKILL to the group and a blocking wait: the child dies at once.
void reap_now(child_state& s) {
  if (s.pid <= 0 || s.reaped) return;
  signal_group(s, SIGKILL);
  int status = 0;
  pid_t r = 0;
  do r = ::waitpid(s.pid, &status, 0);
  while (r < 0 && errno == EINTR);
  if (r == s.pid) {
    s.wait_status = status;
    s.status_known = true;
  }
  s.reaped = true;
}

// Polls for the child's exit every 20 ms for up to `limit`: whether it is gone.
asio::awaitable<bool> wait_exit(std::shared_ptr<child_state> st, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  asio::steady_timer timer(st->ex);
  for (;;) {
    if (try_reap(*st)) co_return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) co_return false;
    timer.expires_after(std::min<std::chrono::steady_clock::duration>(reap_poll, until - now));
    boost::system::error_code ignored;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

std::string exit_description(const child_state& s) {
  if (!s.status_known) return "exited";
  if (WIFEXITED(s.wait_status)) return fmt::format("exited with status {}", WEXITSTATUS(s.wait_status));
  if (WIFSIGNALED(s.wait_status)) return fmt::format("killed by signal {}", WTERMSIG(s.wait_status));
  return "exited";
}

void wake_writers(child_state& s) {
  for (auto& w : s.write_waiters) w->wake.cancel();  // not granted: they return not_connected
  s.write_waiters.clear();
}

void pass_write_turn(child_state& s) {
  if (s.write_waiters.empty()) {
    s.writing = false;
    return;
  }
  auto next = std::move(s.write_waiters.front());
  s.write_waiters.pop_front();
  next->granted = true;
  next->wake.cancel();
}

// The connection ended on the server's side: on_closed, once (not after close()).
void finish(child_state& s, const std::string& why) {
  if (s.closing || s.finished) return;
  s.finished = true;
  close_quietly(s.in);
  wake_writers(s);
  s.log.info("the connection to pid {} ended: {}", s.pid, why);
  auto on_closed = std::move(s.handlers.on_closed);
  s.handlers.on_closed = nullptr;
  if (on_closed) on_closed(why);
}

// After its stdout ended (end of file, a read error) or grew too long (`kill_now`): the
// child is reaped, killed if it does not exit by itself, and the connection reported ended.
asio::awaitable<void> end_connection(std::shared_ptr<child_state> st, std::string why, bool kill_now) {
  close_quietly(st->out);
  if (kill_now) signal_group(*st, SIGKILL);
  bool gone = co_await wait_exit(st, kill_now ? exit_after_kill : exit_after_eof);
  if (!gone && !kill_now) {
    st->log.warn("pid {} {} but did not exit within {} ms: killing its process group", st->pid, why,
                 exit_after_eof.count());
    signal_group(*st, SIGKILL);
    gone = co_await wait_exit(st, exit_after_kill);
  }
  if (!gone)  // in the kernel (a hung file system): reaped by close() or the destructor
    st->log.error("pid {} did not die of SIGKILL within {} ms", st->pid, exit_after_kill.count());
  if (gone && !st->killed_by_us) why = exit_description(*st);
  finish(*st, why);
}

// ---- the readers ------------------------------------------------------------------------------

asio::awaitable<void> read_stdout(std::shared_ptr<child_state> st) {
  std::vector<char> chunk(stdout_chunk);
  std::string partial;  // the line being received, without its newline
  const std::size_t limit = st->settings.max_message_bytes;
  for (;;) {
    boost::system::error_code ec;
    auto read = st->out.async_read_some(asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, ec));
    const std::size_t n = co_await std::move(read);
    if (st->closing || st->finished) co_return;
    if (ec) {
      const std::string why =
          ec == asio::error::eof ? std::string("closed its stdout") : "reading its stdout failed: " + ec.message();
      auto ending = end_connection(st, why, false);
      co_await std::move(ending);
      co_return;
    }
    std::string_view data(chunk.data(), n);
    while (!data.empty()) {
      const auto newline = data.find('\n');
      const std::size_t piece = newline == std::string_view::npos ? data.size() : newline;
      if (partial.size() + piece > limit) {  // not buffered further: the connection ends
        const auto why = fmt::format("the server sent a message larger than {} bytes", limit);
        st->log.warn("{}: killing its process group", why);
        auto ending = end_connection(st, why, true);
        co_await std::move(ending);
        co_return;
      }
      if (newline == std::string_view::npos) {
        partial.append(data);
        break;
      }
      std::string line;
      if (partial.empty()) {
        line.assign(data.substr(0, newline));
      } else {
        line = std::move(partial);
        partial.clear();
        line.append(data.substr(0, newline));
      }
      data.remove_prefix(newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || !st->handlers.on_message) continue;
      st->handlers.on_message(std::move(line));
      if (st->closing || st->finished) co_return;  // the handler closed or destroyed the transport
    }
  }
}

// `text` with control characters and what is not UTF-8 replaced by '?': a server's stderr
// may hold anything, a log line stays one line of text (or of JSON).
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out.push_back((c < 0x20 && c != '\t') || c == 0x7f ? '?' : static_cast<char>(c));
      ++i;
      continue;
    }
    const std::size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    bool ok = len != 0 && i + len <= text.size();
    for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (ok) {  // no overlong forms, surrogates or code points past U+10FFFF
      const auto second = static_cast<unsigned char>(text[i + 1]);
      ok = !(c == 0xe0 && second < 0xa0) && !(c == 0xed && second > 0x9f) && !(c == 0xf0 && second < 0x90) &&
           !(c == 0xf4 && second > 0x8f);
    }
    if (!ok) {
      out.push_back('?');
      ++i;
      continue;
    }
    out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

// Each stderr line goes to the log under the server's name: at most 4 KiB of it, made
// printable, at most 50 lines a second (then one line counting the dropped).
class stderr_logger {
public:
  explicit stderr_logger(const log::logger& log) : log_(log) {}

  void line(std::string_view text, bool cut) {
    if (text.empty() && !cut) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - window_ >= 1s) {
      flush_dropped();
      window_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= stderr_lines_per_second) {
      ++dropped_;
      return;
    }
    ++in_window_;
    auto clean = printable(utf8_prefix(text, stderr_line_cap));
    if (cut) clean += " [cut at 4 KiB]";
    log_.info("stderr: {}", clean);
  }

  void flush_dropped() {
    if (dropped_ == 0) return;
    log_.warn("stderr: {} lines dropped (more than {} a second)", dropped_, stderr_lines_per_second);
    dropped_ = 0;
  }

private:
  const log::logger& log_;
  std::chrono::steady_clock::time_point window_ = std::chrono::steady_clock::now();
  int in_window_ = 0;
  std::uint64_t dropped_ = 0;
};

asio::awaitable<void> read_stderr(std::shared_ptr<child_state> st) {
  std::vector<char> chunk(stderr_chunk);
  std::string line;
  bool cutting = false;  // the current line passed the cap: the rest of it is skipped
  stderr_logger out(st->log);
  for (;;) {
    boost::system::error_code ec;
    auto read = st->err.async_read_some(asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, ec));
    const std::size_t n = co_await std::move(read);
    if (ec) break;  // the end of file, or closed by close() or the destructor
    std::string_view data(chunk.data(), n);
    while (!data.empty()) {
      const auto newline = data.find('\n');
      const auto piece = data.substr(0, newline);
      if (!cutting) {
        line.append(piece.substr(0, stderr_line_cap + 1 - std::min(line.size(), stderr_line_cap + 1)));
        if (line.size() > stderr_line_cap) {
          out.line(line, true);
          line.clear();
          cutting = true;
        }
      }
      if (newline == std::string_view::npos) break;
      data.remove_prefix(newline + 1);
      if (!cutting) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        out.line(line, false);
      }
      line.clear();
      cutting = false;
    }
  }
  if (!cutting) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.line(line, false);
  }
  out.flush_dropped();
}

// write(2) with SIGPIPE blocked in this thread, the one a write to a closed pipe raised
// consumed: a child gone away is EPIPE here, not the death of the process.
ssize_t write_without_sigpipe(int fd, std::string_view data, int& error) {
  sigset_t pipe_signal, previous;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
  const ssize_t n = ::write(fd, data.data(), data.size());
  error = n < 0 ? errno : 0;
  if (n < 0 && error == EPIPE) {
    const timespec zero{};
    ::sigtimedwait(&pipe_signal, nullptr, &zero);
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return n;
}

// ---- the transport ------------------------------------------------------------------------------

class stdio_transport final : public transport {
public:
  stdio_transport(asio::any_io_executor ex, stdio_settings settings)
      : state_(std::make_shared<child_state>(std::move(ex), std::move(settings))) {}

  ~stdio_transport() override {
    auto& s = *state_;
    s.closing = true;
    close_quietly(s.in);
    close_quietly(s.out);
    close_quietly(s.err);
    wake_writers(s);
    reap_now(s);
  }

  asio::awaitable<std::error_code> open(transport_handlers handlers) override {
    auto st = state_;
    if (st->open_called) co_return std::make_error_code(std::errc::already_connected);
    st->open_called = true;
    st->handlers = std::move(handlers);
    const auto& cfg = st->settings;
    const auto fail = [&](std::error_code ec, std::string what) {
      st->failure = fmt::format("mcp server '{}': {}", cfg.server_name, what);
      st->log.warn("{}", st->failure);
      return ec;
    };

    if (cfg.command.empty()) co_return fail(make_error_code(errc::invalid_argument), "no command configured");
    if (cfg.command.find('/') != std::string::npos) {
      st->path = cfg.command;
    } else {
      st->path = find_in_path(cfg.command);
      if (st->path.empty())
        co_return fail(std::make_error_code(std::errc::no_such_file_or_directory),
                       fmt::format("cannot start '{}': not found in PATH", cfg.command));
    }

    // argv and envp, prepared before fork.
    std::vector<std::string> args;
    args.reserve(cfg.args.size() + 1);
    args.push_back(cfg.command);
    args.insert(args.end(), cfg.args.begin(), cfg.args.end());
    std::vector<std::string> env = cfg.environment;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);

    unique_fd in_read, in_write, out_read, out_write, err_read, err_write, report_read, report_write;
    int e = make_pipe(in_read, in_write);
    if (e == 0) e = make_pipe(out_read, out_write);
    if (e == 0) e = make_pipe(err_read, err_write);
    if (e == 0) e = make_pipe(report_read, report_write);
    if (e == 0) e = lift_above_stdio(in_read);
    if (e == 0) e = lift_above_stdio(out_write);
    if (e == 0) e = lift_above_stdio(err_write);
    if (e == 0) e = lift_above_stdio(report_write);
    if (e == 0) e = set_nonblocking(in_write.get());
    if (e == 0) e = set_nonblocking(out_read.get());
    if (e == 0) e = set_nonblocking(err_read.get());
    if (e == 0) e = set_nonblocking(report_read.get());
    if (e != 0) co_return fail(os_error(e), fmt::format("cannot create pipes: {}", std::strerror(e)));

    child_plan plan;
    plan.path = st->path.c_str();
    plan.argv = argv.data();
    plan.envp = envp.data();
    plan.cwd = cfg.working_directory.empty() ? nullptr : cfg.working_directory.c_str();
    plan.stdin_fd = in_read.get();
    plan.stdout_fd = out_write.get();
    plan.stderr_fd = err_write.get();
    plan.report_fd = report_write.get();
    plan.parent = ::getpid();
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY)
      plan.max_fd = static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20));
    sigemptyset(&plan.no_signals);

    // All signals blocked around fork: no handler of ours runs in the child before it has
    // reset the dispositions.
    sigset_t all, previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous);
    const pid_t pid = ::fork();
    if (pid == 0) run_child(plan);
    const int fork_error = errno;
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    if (pid < 0)
      co_return fail(os_error(fork_error), fmt::format("cannot start '{}': {}", st->path, std::strerror(fork_error)));
    st->pid = pid;
    ::setpgid(pid, pid);  // as the child does: no window where kill(-pid) finds no group
    in_read.reset();
    out_write.reset();
    err_write.reset();
    report_write.reset();

    // The report pipe ends (execve closed it) or carries why the child could not start.
    asio::posix::stream_descriptor report(st->ex, report_read.release());
    child_failure failure{};
    boost::system::error_code ec;
    auto read = asio::async_read(report, asio::buffer(&failure, sizeof failure),
                                 asio::redirect_error(asio::use_awaitable, ec));
    const std::size_t got = co_await std::move(read);
    close_quietly(report);
    if (got == sizeof failure) {
      reap_now(*st);  // it has _exit'ed, or is about to
      const auto what = failure.stage == stage_exec
                            ? fmt::format("cannot start '{}': {}", st->path, std::strerror(failure.error))
                        : failure.stage == stage_chdir
                            ? fmt::format("cannot start '{}': cannot change to the working directory '{}': {}",
                                          st->path, cfg.working_directory, std::strerror(failure.error))
                            : fmt::format("cannot set up the process for '{}': {}", st->path, std::strerror(failure.error));
      co_return fail(os_error(failure.error), what);
    }
    if (st->closing) co_return make_error_code(errc::shutting_down);  // close() while starting

    st->in.assign(in_write.release());
    st->out.assign(out_read.release());
    st->err.assign(err_read.release());
    st->started = true;
    st->log.info("started pid {}: {}", pid, st->path);
    const auto component = "mcp:" + cfg.server_name;
    stargazer::spawn(st->ex, [st] { return read_stdout(st); }, component);
    stargazer::spawn(st->ex, [st] { return read_stderr(st); }, component);
    co_return std::error_code{};
  }

  asio::awaitable<std::error_code> send(std::string message) override {
    auto st = state_;
    if (!st->started || st->closing || st->finished) co_return make_error_code(errc::not_connected);
    if (message.find('\n') != std::string::npos) co_return make_error_code(errc::invalid_argument);
    message.push_back('\n');

    // One message at a time: later send()s wait in order for their turn.
    if (st->writing) {
      auto waiter = std::make_shared<write_waiter>(st->ex);
      st->write_waiters.push_back(waiter);
      boost::system::error_code ignored;
      co_await waiter->wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      if (!waiter->granted) co_return make_error_code(errc::not_connected);  // the connection ended
    } else {
      st->writing = true;
    }

    std::error_code result;
    std::string_view rest = message;
    while (!rest.empty()) {
      if (st->closing || st->finished || !st->in.is_open()) {
        result = make_error_code(errc::not_connected);
        break;
      }
      int error = 0;
      const ssize_t n = write_without_sigpipe(st->in.native_handle(), rest, error);
      if (n >= 0) {
        rest.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (error == EINTR) continue;
      if (error == EAGAIN || error == EWOULDBLOCK) {  // the pipe is full: wait for room
        boost::system::error_code ec;
        auto room = st->in.async_wait(asio::posix::stream_descriptor::wait_write,
                                      asio::redirect_error(asio::use_awaitable, ec));
        co_await std::move(room);
        if (ec && ec != asio::error::operation_aborted) {
          result = std::error_code(ec.value(), std::system_category());
          break;
        }
        continue;  // closed meanwhile: the check above says so
      }
      result = os_error(error);
      st->log.debug("writing to pid {} failed: {}", st->pid, result.message());
      break;
    }
    pass_write_turn(*st);
    co_return result;
  }

  asio::awaitable<void> close(std::chrono::milliseconds grace) override {
    auto st = state_;
    st->closing = true;
    close_quietly(st->in);  // a server exits at the end of its input
    wake_writers(*st);
    // The specification's order: end of input first, then SIGTERM, then SIGKILL. A server
    // gets a third of the grace to leave on its own.
    if (st->pid > 0 && !try_reap(*st)) {
      bool gone = co_await wait_exit(st, grace / 3);
      if (!gone) {
        signal_group(*st, SIGTERM);
        gone = co_await wait_exit(st, grace - grace / 3);
      }
      if (!gone) {
        st->log.warn("pid {} did not exit within {} ms of the end of its input and SIGTERM: killing its process group",
                     st->pid, grace.count());
        signal_group(*st, SIGKILL);
        gone = co_await wait_exit(st, exit_after_kill);
        if (!gone) reap_now(*st);
      }
      st->log.info("stopped pid {}: {}", st->pid, exit_description(*st));
    }
    close_quietly(st->out);
    close_quietly(st->err);
  }

  std::string describe() const override {
    const auto& s = *state_;
    if (!s.failure.empty()) return fmt::format("stdio ({}): {}", s.settings.command, s.failure);
    if (s.pid > 0) return fmt::format("stdio pid {} ({})", s.pid, s.settings.command);
    return fmt::format("stdio ({}, not started)", s.settings.command);
  }

private:
  std::shared_ptr<child_state> state_;
};

}  // namespace

std::unique_ptr<transport> make_stdio_transport(boost::asio::any_io_executor ex, stdio_settings settings) {
  return std::make_unique<stdio_transport>(std::move(ex), std::move(settings));
}

}  // namespace stargazer::tools::mcp
