#include "settings.hpp"

#include "stargazer/llm/echo_client.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace stargazer::llm {

namespace {

std::chrono::milliseconds from_seconds(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

}  // namespace

openai_settings openai_settings_from(const config& cfg) {
  openai_settings s;
  s.base_url = cfg.llm_base_url;
  s.api_key = cfg.llm_api_key;
  s.model = cfg.llm_model;
  s.temperature = cfg.llm_temperature;
  s.max_tokens = cfg.llm_max_tokens;
  s.top_p = cfg.llm_top_p;
  s.connect_timeout = from_seconds(cfg.llm_connect_timeout_seconds);
  s.timeout = from_seconds(cfg.llm_timeout_seconds);
  s.max_retries = cfg.llm_max_retries;
  return s;
}

std::unique_ptr<client> make_client(const config& cfg, boost::asio::any_io_executor ex, metrics::registry* metrics) {
  const auto provider = cfg.effective_llm_provider();
  if (provider == "openai") return std::make_unique<openai_client>(std::move(ex), openai_settings_from(cfg), metrics);
  if (provider == "echo") {
    echo_settings s;
    s.delay = std::chrono::milliseconds(cfg.llm_echo_delay_ms);
    return std::make_unique<echo_client>(std::move(ex), s, metrics);
  }
  throw std::invalid_argument("unknown LLM provider '" + provider + "' (expected echo or openai)");
}

}  // namespace stargazer::llm

namespace stargazer::platform {

quota_settings quota_settings_from(const config& cfg) {
  quota_settings s;
  s.per_user = std::get<rate>(parse_rate(cfg.rate_user));
  s.per_instance = std::get<rate>(parse_rate(cfg.rate_instance));
  s.daily_tokens_per_instance = cfg.budget_instance_tokens;
  return s;
}

}  // namespace stargazer::platform

namespace stargazer::worker {

namespace {

std::chrono::seconds whole_seconds(double seconds) {
  return std::chrono::seconds(static_cast<std::int64_t>(std::max(0.0, seconds)));
}

}  // namespace

processor_settings processor_settings_from(const config& cfg) {
  processor_settings s;
  s.bot_name = cfg.bot_name;
  if (!cfg.system_prompt_file.empty()) {
    std::ifstream in(cfg.system_prompt_file, std::ios::binary);
    std::ostringstream text;
    if (!in || !(text << in.rdbuf()))
      throw std::runtime_error("--system-prompt-file: cannot read '" + cfg.system_prompt_file + "'");
    s.system_prompt = text.str();
  }
  s.history_messages = static_cast<std::size_t>(std::max(0, cfg.history_messages));
  s.max_tool_rounds = std::max(1, cfg.max_tool_rounds);
  s.typing_delay = std::chrono::milliseconds(std::max(0, cfg.typing_delay_ms));
  s.model = cfg.llm_model;
  s.temperature = cfg.llm_temperature;
  s.max_tokens = cfg.llm_max_tokens;
  s.top_p = cfg.llm_top_p;
  auto policy = parse_reply_policy_spec(cfg.reply_policy);
  if (auto* error = std::get_if<std::string>(&policy)) throw std::runtime_error("--reply-policy: " + *error);
  s.replies = std::get<reply_policy_spec>(std::move(policy));
  s.triage_model = cfg.triage_model;
  s.triage_max_tokens = std::max(1, cfg.triage_max_tokens);
  s.unprompted_cooldown = whole_seconds(cfg.unprompted_cooldown_seconds);
  s.command_prefix = cfg.command_prefix;
  s.privileges.admin_roles = cfg.admin_roles;
  s.privileges.webchat_admins = cfg.webchat_admins;
  s.quotas = platform::quota_settings_from(cfg);
  return s;
}

heartbeat_settings heartbeat_settings_from(const config& cfg) {
  heartbeat_settings s;
  s.initial_delay = whole_seconds(cfg.heartbeat_initial_delay_seconds);
  s.interval = whole_seconds(cfg.heartbeat_interval_seconds);
  s.quiet = whole_seconds(cfg.heartbeat_quiet_seconds);
  return s;
}

}  // namespace stargazer::worker
