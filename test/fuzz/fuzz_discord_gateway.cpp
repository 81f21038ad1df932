// What the Discord gateway sends (platform/discord/gateway_protocol.hpp), and the reply
// splitter: any bytes through the zlib-stream inflater, in pieces chosen by the input,
// then the payload decoder, never crash; compressed messages come back exactly, however
// they are split into frames; split_message keeps its limits for any text.

#include "stargazer/platform/discord/gateway_protocol.hpp"
#include "stargazer/platform/discord/message_split.hpp"

#include "fuzz_check.hpp"

#include <fuzzer/FuzzedDataProvider.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace discord = stargazer::platform::discord;

namespace {

std::string compressed(z_stream& z, const std::string& message) {
  std::string out(message.size() + 1024, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
  z.avail_in = static_cast<uInt>(message.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  FUZZ_CHECK(deflate(&z, Z_SYNC_FLUSH) == Z_OK);
  out.resize(out.size() - z.avail_out);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider input(data, size);
  switch (input.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: {  // hostile bytes as frames
      discord::zlib_stream stream(64 * 1024);
      while (input.remaining_bytes() > 0) {
        auto frame = input.ConsumeRandomLengthString(512);
        auto r = stream.feed(frame);
        if (auto* message = std::get_if<std::string>(&r)) (void)discord::parse_payload(*message);
        if (std::holds_alternative<discord::zlib_stream::failure>(r)) break;
      }
      break;
    }
    case 1: {  // real compressed messages, split anywhere, come back unchanged
      z_stream z{};
      FUZZ_CHECK(deflateInit(&z, Z_DEFAULT_COMPRESSION) == Z_OK);
      discord::zlib_stream stream;
      for (int i = 0; i < 4 && input.remaining_bytes() > 0; ++i) {
        const auto message = input.ConsumeRandomLengthString(2048);
        if (message.empty()) continue;  // Discord sends no empty messages; deflate would make no flush
        const auto bytes = compressed(z, message);
        const auto split = input.ConsumeIntegralInRange<std::size_t>(0, bytes.size());
        std::variant<discord::zlib_stream::incomplete, std::string, discord::zlib_stream::failure> r;
        if (split > 0 && split < bytes.size()) {
          // A prefix can end in 00 00 ff ff by chance; the stream then decodes what it has so far.
          r = stream.feed(bytes.substr(0, split));
          if (!std::holds_alternative<discord::zlib_stream::incomplete>(r)) break;
          r = stream.feed(bytes.substr(split));
        } else {
          r = stream.feed(bytes);
        }
        FUZZ_CHECK(std::holds_alternative<std::string>(r));
        FUZZ_CHECK(std::get<std::string>(r) == message);
      }
      deflateEnd(&z);
      break;
    }
    case 2: {  // any text as a payload
      const auto text = input.ConsumeRemainingBytesAsString();
      auto r = discord::parse_payload(text);
      if (auto* p = std::get_if<discord::payload>(&r)) FUZZ_CHECK(discord::parse_payload(R"({"op":0,"d":)" + p->data_json + "}").index() == 0);
      break;
    }
    default: {  // any reply: parts within the limit, none empty
      const auto limit = input.ConsumeIntegralInRange<std::size_t>(32, 300);
      const auto text = input.ConsumeRemainingBytesAsString();
      for (const auto& part : discord::split_message(text, limit)) {
        FUZZ_CHECK(!part.empty());
        FUZZ_CHECK(discord::count_chars(part) <= limit);
      }
      break;
    }
  }
  return 0;
}
