// Binds llhttp's C callbacks to member functions of the object in parser->data (after Node's
// node_http_parser.cc), so each parser owner is an ordinary class with typed handlers.
#pragma once

#include <llhttp.h>

#include <cstddef>

namespace ebb::http {

template <typename T>
struct Bind {
  template <int (T::*M)()>
  static int cb(llhttp_t* p) noexcept {
    return (static_cast<T*>(p->data)->*M)();
  }
  template <int (T::*M)(const char*, size_t)>
  static int data(llhttp_t* p, const char* at, size_t len) noexcept {
    return (static_cast<T*>(p->data)->*M)(at, len);
  }
};

// Fails the parse from inside a callback with a reason the caller turns into a status.
inline int fail(llhttp_t* p, const char* reason) {
  llhttp_set_error_reason(p, reason);
  return HPE_USER;
}

}  // namespace ebb::http
