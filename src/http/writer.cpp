// Every HTTP/1 head and response ebb writes: the heads it forwards (request to the app,
// response to the client) and the complete answers it makes itself (errors, probes, admin),
// plus chunk framing. Field names keep their original case on the wire.
#include "http/writer.hpp"

#include <charconv>
#include <cstring>

namespace ebb::http {

namespace {

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ", 2);
  out.append(value);
  out.append("\r\n", 2);
}

// Connection may name extension fields, never the framing or the target: honouring
// "Connection: Content-Length" would unframe the message.
bool protected_field(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "host");
}

bool dropped(std::string_view name, const ConnectionOptions& c) {
  return is_hop_by_hop(name) || (c.named_count > 0 && c.names(name) && !protected_field(name));
}

}  // namespace

void write_request_head(std::string& out, const MessageHead& head, const RequestInfo& info,
                        const ForwardContext& ctx) {
  out.append(ctx.method);
  out += ' ';
  std::string_view target = info.target.empty() ? head.target() : info.target;
  if (!target.empty() && target.front() == '?') out += '/';  // "http://h?q" -> "/?q"
  out.append(target);
  out.append(" HTTP/1.1\r\n", 11);
  std::string_view host;
  bool xff_written = false;
  for (size_t i = 0; i < head.count(); ++i) {
    std::string_view n = head.name(i), v = head.value(i);
    if (dropped(n, info.connection)) {
      if (ctx.upgrade && iequals(n, "upgrade")) append_field(out, n, v);
      continue;
    }
    if (n.size() == 15 && iequals(n, "x-forwarded-for")) {
      if (xff_written) continue;
      // Every X-Forwarded-For line merges into one, in order, with the client's address last.
      xff_written = true;
      out.append(n);
      out.append(": ", 2);
      for (size_t k = i; k < head.count(); ++k) {
        if (head.name(k).size() != 15 || !iequals(head.name(k), "x-forwarded-for")) continue;
        std::string_view val = trim(head.value(k));
        if (val.empty()) continue;
        out.append(val);
        out.append(", ", 2);
      }
      out.append(ctx.client_ip);
      out.append("\r\n", 2);
      continue;
    }
    if (static_cast<int>(i) == info.host_index) {
      // A proxy replaces Host with the authority of an absolute-form target (§3.2.2).
      host = info.authority.empty() ? trim(v) : info.authority;
      append_field(out, n, host);
      continue;
    }
    append_field(out, n, v);
  }
  if (info.host_index < 0) {
    host = info.authority.empty() ? ctx.default_host : info.authority;
    append_field(out, "Host", host);
  }
  if (ctx.upgrade) out.append("Connection: upgrade\r\n");
  if (ctx.body_chunked) out.append("Transfer-Encoding: chunked\r\n");
  if (!xff_written) append_field(out, "X-Forwarded-For", ctx.client_ip);
  if (!info.has_forwarded_proto) out.append("X-Forwarded-Proto: http\r\n");
  if (!info.has_forwarded_host && (info.host_index >= 0 || !info.authority.empty())) {
    append_field(out, "X-Forwarded-Host", host);
  }
  if (!info.has_request_id) append_field(out, "X-Request-Id", ctx.request_id);
  out.append("\r\n", 2);
}

void write_response_head(std::string& out, const MessageHead& head, const ResponseInfo& info,
                         const ResponseFraming& f) {
  char num[8];
  out.append("HTTP/1.1 ", 9);
  auto r = std::to_chars(num, num + sizeof num, f.status);
  out.append(num, r.ptr);
  out += ' ';
  // RFC 9112's reason-phrase is the field-value alphabet (HTAB, SP, VCHAR, obs-text): an app's
  // reason with any other byte (a CR, LF, NUL) is replaced by the standard one, never relayed.
  std::string_view reason = head.target();
  bool own = !reason.empty() && valid_field_value(reason);
  out.append(own ? reason : std::string_view(status_text(f.status)));
  out.append("\r\n", 2);
  for (size_t i = 0; i < head.count(); ++i) {
    std::string_view n = head.name(i), v = head.value(i);
    if (dropped(n, info.connection)) {
      if (f.upgrade && iequals(n, "upgrade")) append_field(out, n, v);
      continue;
    }
    append_field(out, n, v);
  }
  if (f.upgrade) out.append("Connection: upgrade\r\n");
  else if (f.close) out.append("Connection: close\r\n");
  else if (f.keep_alive_10) out.append("Connection: keep-alive\r\n");
  if (f.chunked) out.append("Transfer-Encoding: chunked\r\n");
  out.append("\r\n", 2);
}

void write_local_response(std::string& out, const LocalResponse& r) {
  char num[24];
  out.append("HTTP/1.1 ");
  auto n = std::to_chars(num, num + sizeof num, r.status);
  out.append(num, n.ptr);
  out += ' ';
  out.append(status_text(r.status));
  out.append("\r\nContent-Type: ");
  out.append(r.content_type);
  out.append("\r\nContent-Length: ");
  n = std::to_chars(num, num + sizeof num, r.body.size());
  out.append(num, n.ptr);
  out.append("\r\n");
  if (!r.error.empty()) {
    out.append("X-Ebb-Error: ");
    out.append(r.error);
    out.append("\r\n");
  }
  out.append(r.extra_fields);
  out.append(r.close ? "Connection: close\r\n\r\n" : "\r\n");
  if (!r.head_only) out.append(r.body);
}

void write_error_response(std::string& out, int status, std::string_view reason, bool close,
                          std::string_view extra_fields) {
  std::string body(reason);
  body += '\n';
  LocalResponse r;
  r.status = status;
  r.body = body;
  r.error = reason;
  r.extra_fields = extra_fields;
  r.close = close;
  write_local_response(out, r);
}

size_t chunk_line(char* buf, size_t len) {
  auto r = std::to_chars(buf, buf + 16, len, 16);
  r.ptr[0] = '\r';
  r.ptr[1] = '\n';
  return static_cast<size_t>(r.ptr + 2 - buf);
}

std::string percent_encode(std::string_view s, bool (*keep)(unsigned char)) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (keep(c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

const char* status_text(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace ebb::http
