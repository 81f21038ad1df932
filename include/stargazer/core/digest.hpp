#pragma once
// Digests for secrets and stable ids (OpenSSL): API keys are stored as SHA-256 digests and
// compared in constant time; idempotency keys and Discord nonces are derived from them.

#include <string>
#include <string_view>

namespace stargazer {

// SHA-256 of `text` as lowercase hex.
std::string sha256_hex(std::string_view text);
// Constant-time equality of two equal-length digests (false when the lengths differ).
bool digest_equals(std::string_view a, std::string_view b);

}  // namespace stargazer
