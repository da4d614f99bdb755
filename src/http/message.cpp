// Header rules and head serialisation. Field names keep their original case on the wire.
#include "http/message.hpp"

#include <charconv>
#include <cstring>

namespace ebb::http {

std::string_view MessageHead::find(std::string_view name) const {
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (iequals(this->name(i), name)) return value(i);
  }
  return {};
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void MessageHead::clear() {
  buf_.clear();
  fields_.clear();
  target_len_ = 0;
  in_value_ = false;
}

void MessageHead::shrink_if_large() {
  if (buf_.capacity() <= 8192 && fields_.capacity() <= 128) return;
  clear();
  std::string().swap(buf_);
  std::vector<Field>().swap(fields_);
}

size_t MessageHead::add_target(const char* at, size_t len) {
  buf_.append(at, len);
  target_len_ += static_cast<std::uint32_t>(len);
  return buf_.size();
}

size_t MessageHead::add_name(const char* at, size_t len) {
  if (fields_.empty() || in_value_) {
    auto off = static_cast<std::uint32_t>(buf_.size());
    fields_.push_back(Field{off, 0, off, 0});
    in_value_ = false;
  }
  buf_.append(at, len);
  Field& f = fields_.back();
  f.name_len += static_cast<std::uint32_t>(len);
  f.value_off = static_cast<std::uint32_t>(buf_.size());
  return buf_.size();
}

size_t MessageHead::add_value(const char* at, size_t len) {
  if (fields_.empty()) return buf_.size();  // llhttp never sends a value before a name
  in_value_ = true;
  buf_.append(at, len);
  fields_.back().value_len += static_cast<std::uint32_t>(len);
  return buf_.size();
}

void ConnectionOptions::parse(std::string_view value) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view tok = trim(value.substr(0, comma));
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    if (tok.empty()) continue;
    if (iequals(tok, "close")) close = true;
    else if (iequals(tok, "keep-alive")) keep_alive = true;
    else if (iequals(tok, "upgrade")) upgrade = true;
    if (named_count < kMaxNamed) named[named_count++] = tok;
    else too_many = true;
  }
}

bool ConnectionOptions::names(std::string_view header) const {
  for (size_t i = 0; i < named_count; ++i) {
    if (iequals(named[i], header)) return true;
  }
  return false;
}

bool valid_field_value(std::string_view v) {
  for (unsigned char c : v) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

bool valid_host(std::string_view v) {
  if (v.empty()) return true;  // RFC 9112 §3.2: empty when the target has no authority
  std::string_view host = v;
  std::string_view port;
  if (host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : host.substr(1, close - 1)) {
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
    }
    std::string_view rest = host.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) {
      port = host.substr(colon + 1);
      host = host.substr(0, colon);
    }
    if (host.empty()) return false;
    static const char* allowed = "-._~%!$&'()*+,;=";
    for (char c : host) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || std::strchr(allowed, c))) return false;
    }
  }
  if (port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

namespace {

// "http://host:port/path?q" -> authority "host:port", target "/path?q".
void split_absolute_form(std::string_view t, RequestInfo& info) {
  info.target = t;
  size_t scheme = 0;
  if (t.size() > 7 && iequals(t.substr(0, 7), "http://")) scheme = 7;
  else if (t.size() > 8 && iequals(t.substr(0, 8), "https://")) scheme = 8;
  else return;
  std::string_view rest = t.substr(scheme);
  size_t slash = rest.find_first_of("/?");
  info.authority = rest.substr(0, slash);
  info.target = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
}

}  // namespace

RequestInfo analyse_request(const MessageHead& head, bool http11) {
  RequestInfo info;
  split_absolute_form(head.target(), info);
  for (size_t i = 0; i < head.count(); ++i) {
    std::string_view n = head.name(i), v = head.value(i);
    if (n.empty()) {
      info.error = "empty header name";
      return info;
    }
    if (!valid_field_value(v)) {
      info.error = "invalid character in header value";
      return info;
    }
    switch (n.size()) {
      case 4:
        if (iequals(n, "host")) {
          if (++info.host_count == 1) info.host_index = static_cast<int>(i);
        }
        break;
      case 6:
        if (iequals(n, "expect") && iequals(trim(v), "100-continue")) info.expect_continue = true;
        break;
      case 7:
        if (iequals(n, "upgrade")) {
          info.has_upgrade = true;
          if (iequals(trim(v), "websocket")) info.websocket = true;
        }
        break;
      case 10:
        if (iequals(n, "connection")) info.connection.parse(v);
        break;
      case 12:
        if (iequals(n, "x-request-id")) info.has_request_id = true;
        break;
      case 16:
        if (iequals(n, "x-forwarded-host")) info.has_forwarded_host = true;
        break;
      case 17:
        if (iequals(n, "transfer-encoding")) {
          // llhttp has checked that chunked is final; any other coding is one ebb cannot
          // re-frame faithfully, and a classic smuggling vector, so it is refused.
          if (!iequals(trim(v), "chunked") || info.chunked) {
            info.error = "unsupported transfer-encoding";
            return info;
          }
          info.chunked = true;
        } else if (iequals(n, "x-forwarded-proto")) {
          info.has_forwarded_proto = true;
        }
        break;
      default:
        break;
    }
  }
  // Fields that Connection names are dropped, so ebb adds its own instead.
  if (info.connection.named_count > 0) {
    if (info.connection.names("x-request-id")) info.has_request_id = false;
    if (info.connection.names("x-forwarded-proto")) info.has_forwarded_proto = false;
    if (info.connection.names("x-forwarded-host")) info.has_forwarded_host = false;
  }
  if (info.chunked && !http11) {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    info.error = "Transfer-Encoding in an HTTP/1.0 request";
  } else if (!info.authority.empty() && !valid_host(info.authority)) {
    info.error = "invalid authority in request target";
  } else if (info.host_count > 1) {
    info.error = "more than one Host header";
  } else if (info.host_count == 0 && http11) {
    info.error = "missing Host header";
  } else if (info.host_index >= 0 && !valid_host(trim(head.value(static_cast<size_t>(info.host_index))))) {
    info.error = "invalid Host header";
  } else if (info.connection.too_many) {
    info.error = "too many Connection options";
  }
  return info;
}

ResponseInfo analyse_response(const MessageHead& head) {
  ResponseInfo info;
  for (size_t i = 0; i < head.count(); ++i) {
    std::string_view n = head.name(i);
    if (n.size() == 10 && iequals(n, "connection")) info.connection.parse(head.value(i));
    else if (n.size() == 14 && iequals(n, "content-length")) info.has_content_length = true;
  }
  return info;
}

}  // namespace ebb::http
