// What both HTTP/2 sides (clients' streams, the app's) share with nghttp2: a field as it takes one.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string_view>

namespace ebb::http {

// A name and value nghttp2 copies (no NO_COPY flags): the views need live only for the call.
inline nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

}  // namespace ebb::http
