#pragma once
// The Redis platform's REST API (docs/openapi.json): instances, users, messages (inject,
// `?wait=true`, `Idempotency-Key`, history, 429 when a quota holds a message back), usage
// per day, Server-Sent Events with resume, file downloads. Every route checks the instance it touches; errors are
// {"error": {"code", "message"}}.

#include "stargazer/platform/redis/redis_platform.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace stargazer::http {
class router;
}
namespace stargazer::redis {
class subscriber;
}

namespace stargazer::platform {

struct redis_platform_api_settings {
  std::string admin_key_sha256;  // empty: admin routes answer 403 (no admin key configured)
  std::size_t max_text_bytes = 32 * 1024;
  std::size_t max_attachments = 10;
  std::size_t max_attachment_bytes = 8 * 1024 * 1024;  // decoded
  std::size_t max_name_bytes = 256;
  std::size_t max_metadata_fields = 32;
  std::size_t max_metadata_value_bytes = 1024;
  std::size_t max_extra_bytes = 4 * 1024;  // inject's `extra`, serialised as compact JSON
  std::size_t max_extra_key_bytes = 64;
  std::size_t max_reactions_bytes = 1024;
  std::chrono::seconds default_wait{30};
  std::chrono::seconds max_wait{120};
  std::chrono::seconds idempotency_ttl{86400};
  // A request's "pending" claim on its Idempotency-Key lasts its wait timeout plus this,
  // so that a gateway crash (or a Redis failover that loses the claim's release) does not
  // block the key. Overlapping requests past it are still safe: the inject marker is set
  // atomically with the XADD, so the message goes in once and the other answers 202.
  std::chrono::seconds idempotency_pending_margin{10};
  std::chrono::seconds sse_heartbeat{15};
};

// Routes replies published on `stargazer:redis_platform:response:*` to the requests
// waiting for them (by response nonce) and wakes event streams (by instance). One
// pattern subscription serves the whole gateway.
class reply_hub {
public:
  explicit reply_hub(redis::subscriber& sub);
  ~reply_hub();
  // Subscribes; call once before serving.
  boost::asio::awaitable<std::error_code> start();

  struct impl;

private:
  std::shared_ptr<impl> impl_;
  friend void add_redis_platform_routes(http::router&, redis_platform&, reply_hub&, redis_platform_api_settings);
};

// Also registers the identity admin routes (/redis-platform/identities...), which use
// platform.connection().
void add_redis_platform_routes(http::router& routes, redis_platform& platform, reply_hub& hub,
                               redis_platform_api_settings settings);

}  // namespace stargazer::platform
