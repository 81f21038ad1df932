#pragma once
// Private: socket-level helpers shared by the Redis transport and the HTTP client
// (one deadline idiom, one TLS client setup).

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace stargazer::net {

// Runs `on_expiry` (typically: close the socket, cancel the resolver) when `timeout`
// passes before this object is destroyed. The destructor disarms it: the handler may be
// queued already when the guarded operation completes.
class deadline {
public:
  deadline(boost::asio::any_io_executor ex, std::chrono::milliseconds timeout, std::function<void()> on_expiry)
      : timer_(std::make_shared<boost::asio::steady_timer>(ex, timeout)), state_(std::make_shared<state>()) {
    timer_->async_wait([st = state_, on_expiry = std::move(on_expiry)](const boost::system::error_code& ec) {
      if (!ec && !st->disarmed) {
        st->expired = true;
        on_expiry();
      }
    });
  }
  ~deadline() {
    state_->disarmed = true;
    timer_->cancel();
  }
  deadline(const deadline&) = delete;
  deadline& operator=(const deadline&) = delete;

  bool expired() const { return state_->expired; }

private:
  struct state {
    bool expired = false;
    bool disarmed = false;
  };
  std::shared_ptr<boost::asio::steady_timer> timer_;
  std::shared_ptr<state> state_;
};

// A TLS 1.2+ client context. `verify`: peer verification against `ca_file`, or the
// system's default store when it is empty. Throws boost::system::system_error when the
// CA file cannot be loaded.
std::unique_ptr<boost::asio::ssl::context> make_tls_client_context(const std::string& ca_file, bool verify);

// Before the handshake: SNI for host names (RFC 6066 forbids IP literals in it) and, with
// `verify`, the RFC 6125 name check (an IP literal is matched against the IP SANs).
template <class NextLayer>
boost::system::error_code prepare_tls_client(boost::asio::ssl::stream<NextLayer>& stream, const std::string& host,
                                             bool verify) {
  boost::system::error_code not_an_ip;
  (void)boost::asio::ip::make_address(host, not_an_ip);
  if (not_an_ip && !SSL_set_tlsext_host_name(stream.native_handle(), host.c_str()))
    return {static_cast<int>(::ERR_get_error()), boost::asio::error::get_ssl_category()};
  if (verify) stream.set_verify_callback(boost::asio::ssl::host_name_verification(host));
  return {};
}

}  // namespace stargazer::net
