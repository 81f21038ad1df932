#pragma once
// The configuration mapped onto the settings of the components roles/ builds: the LLM
// provider (cfg.effective_llm_provider() is "openai": any OpenAI-compatible API,
// openai_client; or "echo": offline, echo_client), the message processor and the
// heartbeat. Components never see `config`; tests build their settings directly.

#include "stargazer/core/config.hpp"
#include "stargazer/llm/chat.hpp"
#include "stargazer/llm/openai_client.hpp"
#include "stargazer/worker/heartbeat.hpp"
#include "stargazer/worker/message_processor.hpp"

#include <utility>
#include <boost/asio/any_io_executor.hpp>

#include <memory>

namespace stargazer::metrics {
class registry;
}

namespace stargazer::llm {

// The openai_client settings the configuration asks for (sampling values become the
// defaults of requests that leave them unset).
openai_settings openai_settings_from(const config& cfg);

// Throws std::invalid_argument for an unknown provider or a bad base URL, std::system_error
// when the TLS setup fails. `metrics` may be null.
std::unique_ptr<client> make_client(const config& cfg, boost::asio::any_io_executor ex, metrics::registry* metrics);

}  // namespace stargazer::llm

namespace stargazer::platform {

// --rate-user, --rate-instance, --budget-instance-tokens (validated with the config).
quota_settings quota_settings_from(const config& cfg);

}  // namespace stargazer::platform

namespace stargazer::worker {

// Reads the prompt file (throws std::runtime_error naming it, or a bad --reply-policy).
processor_settings processor_settings_from(const config& cfg);

heartbeat_settings heartbeat_settings_from(const config& cfg);

}  // namespace stargazer::worker
