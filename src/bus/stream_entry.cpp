#include "stargazer/bus/stream_entry.hpp"

namespace stargazer::bus {

std::vector<stream_entry> parse_entries(redis::reply& list) {
  std::vector<stream_entry> out;
  if (!list.is_array()) return out;
  out.reserve(list.elements().size());
  for (auto& item : list.elements()) {
    if (!item.is_array() || item.elements().size() != 2 || !item.elements()[0].is_bulk()) continue;
    stream_entry e;
    e.id = std::move(item.elements()[0].str());
    auto& kv = item.elements()[1];
    if (kv.is_array()) {
      auto& flat = kv.elements();
      e.fields.reserve(flat.size() / 2);
      for (std::size_t i = 0; i + 1 < flat.size(); i += 2)
        e.fields.emplace_back(std::move(flat[i].str()), std::move(flat[i + 1].str()));
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<stream_entry> parse_xread(redis::reply& r) {
  std::vector<stream_entry> out;
  if (!r.is_array()) return out;
  for (auto& stream : r.elements()) {
    if (!stream.is_array() || stream.elements().size() != 2) continue;
    auto part = parse_entries(stream.elements()[1]);
    out.insert(out.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
  }
  return out;
}

}  // namespace stargazer::bus
