#include "stargazer/core/error.hpp"

namespace stargazer {
namespace {

class category final : public std::error_category {
public:
  const char* name() const noexcept override { return "stargazer"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::ok: return "success";
      case errc::timeout: return "deadline exceeded";
      case errc::not_connected: return "not connected";
      case errc::connection_lost: return "connection lost while the command was in flight";
      case errc::protocol_error: return "protocol error";
      case errc::reply_too_large: return "reply exceeds the size limit";
      case errc::redis_error: return "redis returned an error reply";
      case errc::unexpected_reply: return "unexpected reply type";
      case errc::shutting_down: return "shutting down";
      case errc::invalid_argument: return "invalid argument";
      case errc::no_master: return "sentinel knows no master";
      case errc::decode_error: return "decode error";
    }
    return "unknown stargazer error";
  }
};

}  // namespace

const std::error_category& stargazer_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace stargazer
