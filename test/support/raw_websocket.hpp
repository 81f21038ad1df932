#pragma once
// A minimal blocking RFC 6455 client on a raw loopback socket, for tests: the upgrade
// handshake with any Origin (or none), masked frames of any length out, frames in with a
// deadline. No second WebSocket library, no Beast in the tests.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stargazer::test {

struct ws_frame {
  int opcode = -1;  // 1 text, 2 binary, 8 close, 9 ping, 10 pong; -1: nothing arrived (timeout or EOF)
  std::string payload;
};

class raw_websocket {
 public:
  raw_websocket() = default;
  ~raw_websocket();
  raw_websocket(const raw_websocket&) = delete;
  raw_websocket& operator=(const raw_websocket&) = delete;

  // Connects and sends the upgrade request; returns the response head (status line and
  // headers), empty when the connection failed. Without `origin` no Origin header is sent.
  // `extra_headers`: whole header lines, each ending in "\r\n" (a Cookie, say).
  std::string handshake(std::uint16_t port, const std::string& path = "/ws",
                        const std::optional<std::string>& origin = std::string("http://localhost"),
                        const std::string& host = "localhost", const std::string& extra_headers = {});
  // After a refused handshake: the response body (what Content-Length says), "" on timeout.
  std::string read_body(std::string_view head, int timeout_ms = 3000);

  void send_text(std::string_view text) { send_frame(0x1, text); }
  void send_frame(int opcode, std::string_view payload);

  // The next frame within `timeout_ms`.
  ws_frame read_frame(int timeout_ms = 3000);
  // The next frame's payload when it is a text frame, else "<no text frame>".
  std::string read_text(int timeout_ms = 3000);
  // Text frames until one contains `needle` (others are skipped); empty on timeout or close.
  std::string read_until(std::string_view needle, int timeout_ms = 5000);
  // Whether the server ended the connection (a read found end of stream or an error), as
  // opposed to a read that only timed out.
  bool peer_closed() const { return peer_closed_; }

 private:
  bool fill(int timeout_ms);

  int fd_ = -1;
  std::string in_;
  bool peer_closed_ = false;
};

}  // namespace stargazer::test
