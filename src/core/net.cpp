#include "detail/net.hpp"

namespace stargazer::net {

namespace ssl = boost::asio::ssl;

std::unique_ptr<ssl::context> make_tls_client_context(const std::string& ca_file, bool verify) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  if (verify) {
    ctx->set_verify_mode(ssl::verify_peer);
    if (ca_file.empty()) ctx->set_default_verify_paths();
    else ctx->load_verify_file(ca_file);
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  return ctx;
}

}  // namespace stargazer::net
