#include "stargazer/worker/incoming_message.hpp"

namespace stargazer::worker {

incoming_message incoming_message_from(const bus::inbound_envelope& e, std::chrono::system_clock::time_point now) {
  incoming_message m;
  m.platform = e.platform;
  m.channel_id = e.channel_id;
  m.user_id = e.user_id;
  m.user_name = e.username;
  m.text = e.content;
  m.is_addressed = e.is_addressed;
  m.attachments = e.attachments;
  m.channel_name = e.room_name;
  m.timestamp = e.timestamp > 0 ? std::chrono::system_clock::time_point(std::chrono::duration_cast<
                                      std::chrono::system_clock::duration>(std::chrono::duration<double>(e.timestamp)))
                                : now;
  m.message_id = e.message_id;
  m.reply_to_id = e.reply_to;
  m.extra.guild_id = e.guild_id;
  m.extra.guild_name = e.guild_name;
  m.extra.channel_id_raw = e.channel_id;
  m.extra.is_dm = e.is_dm;
  m.extra.member_roles = e.member_roles;
  m.extra.member_count = e.member_count;
  m.extra.fields = e.extra;
  m.reactions = e.reactions;
  m.unified_user_id = e.unified_user_id;
  m.user_aliases = e.user_aliases;
  m.trace_id = e.trace_id;
  m.response_nonce = e.response_nonce;
  m.cached = e.cached;
  return m;
}

}  // namespace stargazer::worker
