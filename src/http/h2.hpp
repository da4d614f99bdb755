// What both HTTP/2 sides (clients' streams, the app's) share with nghttp2: a field as it takes
// one, and the frames it has to send gathered for one write.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace ebb::http {

// A name and value nghttp2 copies (no NO_COPY flags): the views need live only for the call.
inline nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

// Appends what the session has to send to `out` while the bytes already queued on the socket
// (`queued`) and `out` together stay under `cap`: above that the socket is the bottleneck, frames
// wait inside nghttp2 (their DATA in the streams, each within its budget) and the next write's
// completion asks again. 0, or nghttp2's error. The caller keeps nghttp2 from being re-entered.
inline int gather_frames(nghttp2_session* session, std::string& out, size_t queued, size_t cap) {
  while (queued + out.size() <= cap) {
    const std::uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n <= 0) return static_cast<int>(n);
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  return 0;
}

}  // namespace ebb::http
