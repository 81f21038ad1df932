#pragma once
// The project's one error enum and its std::error_category. Expected failures at I/O
// edges travel as std::error_code; exceptions are for startup and programmer errors.

#include <string>
#include <system_error>

namespace stargazer {

enum class errc {
  ok = 0,
  timeout = 1,            // a command or request passed its deadline
  not_connected,          // the connection is down and the command may not be retried
  connection_lost,        // the connection dropped while the command was in flight
  protocol_error,         // the peer sent bytes that are not valid protocol
  reply_too_large,        // a reply exceeded the configured size limit
  redis_error,            // the server answered with an error reply
  unexpected_reply,       // the reply had a type the caller did not expect
  shutting_down,          // the component is stopping and takes no new work
  invalid_argument,       // the caller passed something malformed
  no_master,              // Sentinel knows no master for the configured name
  decode_error,           // an envelope or body could not be decoded
};

const std::error_category& stargazer_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), stargazer_category()};
}

}  // namespace stargazer

template <>
struct std::is_error_code_enum<stargazer::errc> : std::true_type {};
