#include "stargazer/bus/lock.hpp"

#include "stargazer/redis/connection.hpp"
#include "stargazer/core/spawn.hpp"

#include <boost/asio.hpp>
#include <openssl/rand.h>

#include <random>

namespace stargazer::bus {

namespace asio = boost::asio;

namespace {

const redis::script& release_script() {
  static const redis::script s(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua");
  return s;
}

const redis::script& renew_script() {
  static const redis::script s(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
)lua");
  return s;
}

}  // namespace

std::string random_hex_id() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    std::random_device rd;
    for (auto& b : bytes) b = static_cast<unsigned char>(rd());
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (std::size_t i = 0; i < sizeof bytes; ++i) {
    out[2 * i] = hex[bytes[i] >> 4];
    out[2 * i + 1] = hex[bytes[i] & 0xf];
  }
  return out;
}

struct distributed_lock::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& c, std::string k, std::chrono::milliseconds t)
      : conn(c), key(std::move(k)), token(random_hex_id()), ttl(t), renew_timer(c.get_executor()) {}

  redis::connection& conn;
  std::string key;
  std::string token;
  std::chrono::milliseconds ttl;
  asio::steady_timer renew_timer;
  bool held = false;
  bool lost = false;

  static asio::awaitable<void> renew_loop(std::shared_ptr<impl> self) {
    while (self->held) {
      self->renew_timer.expires_after(self->ttl / 3);
      boost::system::error_code ec;
      co_await self->renew_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !self->held) break;
      const std::vector<std::string> keys{self->key};
      const std::vector<std::string> args{self->token, std::to_string(self->ttl.count())};
      auto r = co_await self->conn.eval(renew_script(), keys, args);
      if (r && r->is_integer() && r->integer() == 0) {
        self->lost = true;
        self->held = false;
      }
    }
  }
};

distributed_lock::distributed_lock(redis::connection& conn, std::string key, std::chrono::milliseconds ttl)
    : impl_(std::make_shared<impl>(conn, std::move(key), ttl)) {}

distributed_lock::~distributed_lock() {
  impl_->held = false;
  impl_->renew_timer.cancel();
}

asio::awaitable<bool> distributed_lock::try_acquire() {
  auto self = impl_;
  if (self->held) co_return true;
  auto r = co_await self->conn.command("SET", self->key, self->token, "NX", "PX", self->ttl.count());
  if (!r || !r->is_status()) co_return false;
  self->held = true;
  self->lost = false;
  spawn(self->conn.get_executor(), impl::renew_loop(self), "lock");
  co_return true;
}

asio::awaitable<bool> distributed_lock::acquire(std::chrono::milliseconds deadline) {
  auto self = impl_;
  const auto until = std::chrono::steady_clock::now() + deadline;
  auto pause = std::chrono::milliseconds(2);
  asio::steady_timer timer(self->conn.get_executor());
  for (;;) {
    if (co_await try_acquire()) co_return true;
    if (std::chrono::steady_clock::now() + pause > until) co_return false;
    timer.expires_after(pause);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

asio::awaitable<void> distributed_lock::release() {
  auto self = impl_;
  if (!self->held) co_return;
  self->held = false;
  self->renew_timer.cancel();
  const std::vector<std::string> keys{self->key};
  const std::vector<std::string> args{self->token};
  auto r = co_await self->conn.eval(release_script(), keys, args);
  (void)r;  // a failed release expires by TTL
}

bool distributed_lock::held() const { return impl_->held; }
bool distributed_lock::lost() const { return impl_->lost; }
const std::string& distributed_lock::key() const { return impl_->key; }
const std::string& distributed_lock::token() const { return impl_->token; }

}  // namespace stargazer::bus
