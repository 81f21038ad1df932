#include "stargazer/redis/scan.hpp"

#include "stargazer/core/error.hpp"

namespace stargazer::redis {

boost::asio::awaitable<result<std::vector<std::string>>> scan_keys(connection& conn, const std::string& pattern) {
  std::vector<std::string> keys;
  std::string cursor = "0";
  do {
    auto page = co_await conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000");
    if (!page) co_return page.error();
    if (page->is_error()) co_return make_error_code(errc::redis_error);
    if (!page->is_array() || page->elements().size() != 2 || !page->elements()[1].is_array())
      co_return make_error_code(errc::unexpected_reply);
    cursor = page->elements()[0].str();
    for (const auto& key : page->elements()[1].elements()) keys.push_back(key.str());
  } while (cursor != "0");
  co_return keys;
}

}  // namespace stargazer::redis
