#pragma once
// The web chat page's files (web/), embedded at build time by cmake/embed_text.cmake
// (src/CMakeLists.txt): the binary serves them, never the disk.

#include <string_view>

namespace stargazer::platform::webchat_assets {

std::string_view index_html();
std::string_view app_js();
std::string_view style_css();
std::string_view icon_svg();

}  // namespace stargazer::platform::webchat_assets
