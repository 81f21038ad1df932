#include "raw_websocket.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <cstdlib>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace stargazer::test {

raw_websocket::~raw_websocket() {
  if (fd_ >= 0) ::close(fd_);
}

std::string raw_websocket::handshake(std::uint16_t port, const std::string& path,
                                     const std::optional<std::string>& origin, const std::string& host,
                                     const std::string& extra_headers) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + host +
                    "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
  if (origin) req += "Origin: " + *origin + "\r\n";
  req += extra_headers + "\r\n";
  ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL);
  std::size_t end;
  while ((end = in_.find("\r\n\r\n")) == std::string::npos)
    if (!fill(5000)) return in_;
  auto head = in_.substr(0, end + 4);
  in_.erase(0, end + 4);
  return head;
}

std::string raw_websocket::read_body(std::string_view head, int timeout_ms) {
  std::size_t length = 0;
  for (const std::string_view name : {"Content-Length: ", "content-length: "}) {
    if (const auto at = head.find(name); at != std::string_view::npos) {
      length = static_cast<std::size_t>(std::strtoul(std::string(head.substr(at + name.size(), 12)).c_str(), nullptr, 10));
      break;
    }
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (in_.size() < length) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (!fill(static_cast<int>(left.count()))) break;
  }
  auto body = in_.substr(0, std::min(length, in_.size()));
  in_.erase(0, body.size());
  return body;
}

void raw_websocket::send_frame(int opcode, std::string_view payload) {
  std::string frame{static_cast<char>(0x80 | opcode)};
  const auto n = payload.size();
  if (n < 126) {
    frame.push_back(static_cast<char>(0x80 | n));
  } else if (n <= 0xffff) {
    frame.push_back(static_cast<char>(0x80 | 126));
    frame.push_back(static_cast<char>(n >> 8));
    frame.push_back(static_cast<char>(n & 0xff));
  } else {
    frame.push_back(static_cast<char>(0x80 | 127));
    for (int shift = 56; shift >= 0; shift -= 8) frame.push_back(static_cast<char>((n >> shift) & 0xff));
  }
  const char mask[4] = {0x37, 0x1f, 0x5a, 0x02};
  frame.append(mask, 4);
  for (std::size_t i = 0; i < n; ++i) frame.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
  std::size_t sent = 0;
  while (sent < frame.size()) {
    const auto k = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (k <= 0) return;  // the server may have closed the connection
    sent += static_cast<std::size_t>(k);
  }
}

bool raw_websocket::fill(int timeout_ms) {
  if (fd_ < 0 || timeout_ms <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  char buf[16384];
  const auto n = ::recv(fd_, buf, sizeof buf, 0);
  if (n <= 0) {
    peer_closed_ = true;
    return false;
  }
  in_.append(buf, static_cast<std::size_t>(n));
  return true;
}

ws_frame raw_websocket::read_frame(int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto left = [&] {
    return static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now())
            .count());
  };
  for (;;) {
    // Server frames are unmasked: 2 header bytes, then 0, 2 or 8 length bytes.
    if (in_.size() >= 2) {
      const auto b0 = static_cast<unsigned char>(in_[0]);
      const auto b1 = static_cast<unsigned char>(in_[1]);
      std::size_t header = 2;
      std::uint64_t len = b1 & 0x7f;
      if (len == 126) header = 4;
      if (len == 127) header = 10;
      if (in_.size() >= header) {
        if (header == 4)
          len = (static_cast<std::uint64_t>(static_cast<unsigned char>(in_[2])) << 8) |
                static_cast<unsigned char>(in_[3]);
        if (header == 10) {
          len = 0;
          for (int i = 2; i < 10; ++i)
            len = (len << 8) | static_cast<unsigned char>(in_[static_cast<std::size_t>(i)]);
        }
        if (in_.size() >= header + len) {
          ws_frame f{b0 & 0x0f, in_.substr(header, len)};
          in_.erase(0, header + len);
          return f;
        }
      }
    }
    if (!fill(left())) return {};
  }
}

std::string raw_websocket::read_text(int timeout_ms) {
  auto f = read_frame(timeout_ms);
  return f.opcode == 0x1 ? f.payload : "<no text frame>";
}

std::string raw_websocket::read_until(std::string_view needle, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {};
    auto f = read_frame(static_cast<int>(left.count()));
    if (f.opcode == -1 || f.opcode == 0x8) return {};
    if (f.opcode == 0x1 && f.payload.find(needle) != std::string::npos) return f.payload;
  }
}

}  // namespace stargazer::test
