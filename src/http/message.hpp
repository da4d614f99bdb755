// A message head as llhttp delivers it (pieces that may arrive split), and the header rules of
// RFC 9110/9112 a proxy applies to it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ebb::http {

bool iequals(std::string_view a, std::string_view b);
std::string_view trim(std::string_view s);

// Collects the target (or a response's reason phrase) and the header fields of one message.
// Storage is reused from message to message, so a keep-alive connection allocates only while
// its heads grow.
class MessageHead {
 public:
  void clear();
  // Each returns the total head bytes so far, for the caller's limit checks.
  size_t add_target(const char* at, size_t len);
  size_t add_name(const char* at, size_t len);
  size_t add_value(const char* at, size_t len);
  size_t bytes() const { return buf_.size(); }

  std::string_view target() const { return {buf_.data(), target_len_}; }
  size_t count() const { return fields_.size(); }
  std::string_view name(size_t i) const { return {buf_.data() + fields_[i].name_off, fields_[i].name_len}; }
  std::string_view value(size_t i) const { return {buf_.data() + fields_[i].value_off, fields_[i].value_len}; }
  // The first value of field `name` (case-insensitive), or "" when absent.
  std::string_view find(std::string_view name) const;
  // Releases storage grown by an unusually large head, so idle connections stay small.
  void shrink_if_large();

 private:
  struct Field {
    std::uint32_t name_off, name_len, value_off, value_len;
  };
  std::string buf_;
  std::vector<Field> fields_;
  std::uint32_t target_len_ = 0;
  bool in_value_ = false;
};

// Names listed in Connection, and the options ebb acts on.
struct ConnectionOptions {
  static constexpr size_t kMaxNamed = 16;
  std::string_view named[kMaxNamed];
  size_t named_count = 0;
  bool close = false;
  bool keep_alive = false;
  bool upgrade = false;
  bool too_many = false;
  void parse(std::string_view value);
  bool names(std::string_view header) const;
};

// Hop-by-hop by RFC 9110 §7.6.1, whatever Connection lists. Inline: it is on every forwarded
// field's path.
inline bool is_hop_by_hop(std::string_view n) {
  switch (n.size()) {
    case 2: return iequals(n, "te");
    case 7: return iequals(n, "upgrade");
    case 10: return iequals(n, "connection") || iequals(n, "keep-alive");
    case 16: return iequals(n, "proxy-connection");
    case 17: return iequals(n, "transfer-encoding");
    default: return false;
  }
}

// RFC 9110 §5.5: no CTL but HTAB, no CR/LF (obs-fold arrives as CR/LF inside a value).
bool valid_field_value(std::string_view v);
// RFC 3986 authority as Host allows: reg-name / IPv4 / [IPv6] with an optional port.
bool valid_host(std::string_view v);

// What the request's head says about forwarding it; filled by analyse_request.
struct RequestInfo {
  ConnectionOptions connection;
  int host_index = -1;
  int host_count = 0;
  bool chunked = false;        // Transfer-Encoding: chunked (the only coding ebb accepts)
  bool has_request_id = false;
  bool has_forwarded_proto = false;
  bool has_forwarded_host = false;
  bool expect_continue = false;
  bool websocket = false;      // Upgrade: websocket
  bool has_upgrade = false;
  // absolute-form target (RFC 9112 §3.2.2): forwarded in origin-form, its authority as Host
  std::string_view target;     // what goes on the request line
  std::string_view authority;  // non-empty for an absolute-form target
  const char* error = nullptr;  // reason for a 400, when the head breaks a rule
};
RequestInfo analyse_request(const MessageHead& head, bool http11);

struct ResponseInfo {
  ConnectionOptions connection;
  bool has_content_length = false;
};
ResponseInfo analyse_response(const MessageHead& head);

}  // namespace ebb::http
