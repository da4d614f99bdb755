// The exchange: one request forwarded to the app and its answer streamed back. Policy reads
// as phases: pick a connection (pool, or connect with retries), send the head, stream the
// body, rewrite the response head, stream the response, then keep alive or close.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "log.hpp"
#include "net/io.hpp"
#include "proxy/client.hpp"
#include "proxy/upstream.hpp"
#include "proxy/worker.hpp"

namespace ebb {

namespace {
constexpr std::uint64_t kFirstRetryDelayMs = 25;
constexpr std::uint64_t kMaxRetryDelayMs = 250;

// "<hex>\r\n" for a chunk of `len` bytes.
size_t chunk_line(char* buf, size_t len) {
  auto r = std::to_chars(buf, buf + 16, len, 16);
  r.ptr[0] = '\r';
  r.ptr[1] = '\n';
  return static_cast<size_t>(r.ptr + 2 - buf);
}
}  // namespace

void ClientConn::begin_forward() {
  http::ForwardContext ctx;
  ctx.method = llhttp_method_name(static_cast<llhttp_method_t>(parser_.method));
  ctx.client_ip = client_ip_;
  ctx.request_id = w_.next_request_id();
  if (!info_.has_request_id) {
    size_t n = std::min(ctx.request_id.size(), sizeof ex_.request_id - 1);
    std::memcpy(ex_.request_id, ctx.request_id.data(), n);
  }
  ctx.default_host = w_.upstream_host();
  ctx.body_chunked = ex_.body_chunked;
  ctx.upgrade = ex_.upgrade;
  out_.clear();
  http::write_request_head(out_, head_, info_, ctx);
  if (UpstreamConn* u = w_.pool().take()) {
    up_ = u;
    u->attach(this, ex_.head_method);
    send_request_head();
    return;
  }
  connect_upstream();
}

void ClientConn::connect_upstream() {
  if (ex_.retry_until_ms == 0) ex_.retry_until_ms = w_.now_ms() + w_.cfg().upstream_retry.connect_retry_budget;
  auto* u = new UpstreamConn(w_);
  up_ = u;
  int r = u->connect(this, ex_.head_method);
  if (r < 0) {
    up_ = nullptr;
    u->close();
    upstream_connected(nullptr, r);
  }
}

void ClientConn::upstream_connected(UpstreamConn* up, int status) {
  if (up != nullptr && up != up_) return;
  if (status == 0) {
    send_request_head();
    return;
  }
  up_ = nullptr;
  // A refused connect reached no app process, so it is safe to try again for any method:
  // this covers the app restarting (or not listening yet) within the retry budget.
  bool refused = status == UV_ECONNREFUSED;
  std::uint64_t delay = ex_.retry_delay_ms == 0 ? kFirstRetryDelayMs
                                                : std::min(ex_.retry_delay_ms * 2, kMaxRetryDelayMs);
  if (refused && w_.now_ms() + delay <= ex_.retry_until_ms) {
    ex_.retry_delay_ms = delay;
    arm(TimerFor::kRetry, delay);
    return;
  }
  UpstreamError kind = refused ? UpstreamError::kConnectRefused : UpstreamError::kConnectOther;
  w_.metrics().count_upstream_error(kind);
  LOG_WARN("upstream connect failed", {"conn", id_}, {"error", uv_err_name(status)});
  send_error(502, refused ? "upstream refused the connection" : "upstream unreachable");
}

void ClientConn::send_request_head() {
  uv_buf_t bufs[2] = {uv_buf_init(out_.data(), static_cast<unsigned>(out_.size())),
                      uv_buf_init(pending_body_.data(), static_cast<unsigned>(pending_body_.size()))};
  UpstreamConn* u = up_;
  ex_.upstream_sent_ns = uv_hrtime();
  int r = u->send(bufs, pending_body_.empty() ? 1 : 2);
  if (r < 0) {
    up_ = nullptr;
    u->close();
    replay_or_fail(u, UpstreamError::kClosedEarly, r);
    return;
  }
  pending_body_.clear();
  if (ex_.request_complete && !tunnel_) u->arm_response_timer();
  update_read();
}

int ClientConn::forward_body(const char* at, size_t len) {
  char line[24];
  uv_buf_t bufs[3];
  unsigned n = 0;
  if (ex_.body_chunked) {
    if (len == 0) {
      bufs[n++] = uv_buf_init(const_cast<char*>("0\r\n\r\n"), 5);
    } else {
      bufs[n++] = uv_buf_init(line, static_cast<unsigned>(chunk_line(line, len)));
      bufs[n++] = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
      bufs[n++] = uv_buf_init(const_cast<char*>("\r\n"), 2);
    }
  } else {
    if (len == 0) return 0;
    bufs[n++] = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
  }
  if (up_ == nullptr || !up_->connected() || !pending_body_.empty()) {
    // The app cannot take it yet (connecting, or retrying): hold it; reading stops meanwhile.
    for (unsigned i = 0; i < n; ++i) pending_body_.append(bufs[i].base, bufs[i].len);
    return 0;
  }
  UpstreamConn* u = up_;
  int r = u->send(bufs, n);
  if (r < 0) {
    up_ = nullptr;
    u->close();
    replay_or_fail(u, UpstreamError::kClosedEarly, r);
    return HPE_USER;
  }
  return 0;
}

void ClientConn::replay_or_fail(UpstreamConn* up, UpstreamError kind, int err) {
  // A pooled connection that the app closed before answering: the request never reached it,
  // or an idempotent, body-less request can be sent again without harm (RFC 9110 §9.2.2).
  if (kind == UpstreamError::kClosedEarly && up != nullptr && up->reused() && !up->got_bytes() &&
      ex_.replayable && !ex_.retried && !ex_.response_started) {
    ex_.retried = true;
    w_.metrics().count_upstream_error(UpstreamError::kStaleRetried);
    LOG_DEBUG("pooled upstream connection was closed; replaying", {"conn", id_});
    connect_upstream();
    return;
  }
  w_.metrics().count_upstream_error(kind);
  if (tunnel_) {
    close(Unanswered::kUpstreamBroken);
    return;
  }
  bool timeout = kind == UpstreamError::kResponseTimeout || kind == UpstreamError::kConnectTimeout;
  LOG_WARN("upstream failed", {"conn", id_}, {"kind", upstream_error_name(kind)},
           {"error", err < 0 ? uv_err_name(err) : "protocol"}, {"response_started", ex_.response_started});
  if (ex_.response_started) {
    close(Unanswered::kUpstreamBroken);  // the status line is out: closing is the only honest signal left
    return;
  }
  const char* reason = "upstream failed";
  switch (kind) {
    case UpstreamError::kConnectTimeout: reason = "upstream connect timeout"; break;
    case UpstreamError::kResponseTimeout: reason = "upstream response timeout"; break;
    case UpstreamError::kClosedEarly: reason = "upstream closed the connection before answering"; break;
    case UpstreamError::kBadResponse: reason = "upstream sent a malformed response"; break;
    default: break;
  }
  send_error(timeout ? 504 : 502, reason);
}

void ClientConn::upstream_failed(UpstreamConn* up, UpstreamError kind, int err) {
  if (up != up_) return;
  up_ = nullptr;
  replay_or_fail(up, kind, err);
}

// The app's answer began: its time to first byte.
void ClientConn::upstream_began() {
  if (ex_.upstream_first_ns != 0) return;
  ex_.upstream_first_ns = uv_hrtime();
  w_.metrics().upstream_response.observe(static_cast<double>(ex_.upstream_first_ns - ex_.upstream_sent_ns) / 1e9);
}

int ClientConn::upstream_informational(UpstreamConn* up) {
  upstream_began();
  if (ex_.http10) return 0;  // HTTP/1.0 clients do not expect 1xx
  http::ResponseFraming f;
  f.status = up->status();
  flush_batch();
  scratch_.clear();
  http::write_response_head(scratch_, up->head(), http::analyse_response(up->head()), f);
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1);
  return closing_ ? HPE_USER : 0;
}

int ClientConn::upstream_head(UpstreamConn* up) {
  upstream_began();
  int status = up->status();
  ex_.status = status;
  http::ResponseInfo ri = http::analyse_response(up->head());
  http::ResponseFraming f;
  f.status = status;
  if (status == 101) {
    if (!ex_.upgrade) {
      send_error(502, "upstream switched protocols unasked");
      return HPE_USER;
    }
    f.upgrade = true;
    tunnel_ = true;
    ex_.websocket = info_.websocket;
  } else {
    bool no_body = ex_.head_method || status == 204 || status == 304;
    bool close_delimited = !no_body && !ri.has_content_length && ex_.http10;  // no chunked for 1.0
    f.chunked = !no_body && !ri.has_content_length && !ex_.http10;         // keeps the connection reusable
    // A declined upgrade: the client's next bytes are not HTTP. Answered before the whole request
    // arrived: the rest of it cannot be told from a next request.
    ex_.close_after = announce_close(ex_.upgrade || close_delimited || !ex_.request_complete);
    f.close = ex_.close_after;
    f.keep_alive_10 = ex_.http10 && !ex_.close_after;
  }
  ex_.response_chunked = f.chunked;
  flush_batch();
  scratch_.clear();
  http::write_response_head(scratch_, up->head(), ri, f);
  ex_.response_started = true;
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1);
  if (closing_) return HPE_USER;
  if (tunnel_) {
    up->begin_tunnel();
    if (!pending_body_.empty()) {
      uv_buf_t early = uv_buf_init(pending_body_.data(), static_cast<unsigned>(pending_body_.size()));
      up->send(&early, 1);
      pending_body_.clear();
    }
    update_read();
  }
  return 0;
}

int ClientConn::upstream_body(const char* at, size_t len) {
  char local[24];
  uv_buf_t bufs[3];
  unsigned n = 0;
  if (ex_.response_chunked) {
    char* line = chunk_line_buffer(local);
    bufs[n++] = uv_buf_init(line, static_cast<unsigned>(chunk_line(line, len)));
    bufs[n++] = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
    bufs[n++] = uv_buf_init(const_cast<char*>("\r\n"), 2);
  } else {
    bufs[n++] = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
  }
  send(bufs, n);
  if (closing_) return HPE_USER;
  if (up_ != nullptr && net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) > w_.budget().high) {
    up_->set_client_blocked(true);
  }
  return 0;
}

void ClientConn::upstream_done(UpstreamConn* up) {
  if (up != up_) return;
  if (ex_.response_chunked) {
    uv_buf_t b = uv_buf_init(const_cast<char*>("0\r\n\r\n"), 5);
    send(&b, 1);
    if (closing_) return;
  }
  release_upstream(up->response_keep_alive() && ex_.request_complete);
  finish_exchange();
}

void ClientConn::upstream_tunnel(const char* at, size_t len) {
  const auto* p = reinterpret_cast<const unsigned char*>(at);
  if (ex_.websocket) {
    if (ws_close_pending_) {
      size_t boundary = ws_.to_boundary(p, len);
      if (boundary == WsFrameTracker::kNone) {
        uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
        send(&b, 1);
        return;
      }
      uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(boundary));
      send(&b, 1);
      if (!closing_) send_ws_close_and_close();
      return;
    }
    ws_.consume(p, len);
  }
  uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
  send(&b, 1);
  if (!closing_ && up_ != nullptr && net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) > w_.budget().high) {
    up_->set_client_blocked(true);
  }
}

void ClientConn::upstream_eof() {
  // The app closed the tunnel: pass the end on after what is queued.
  ex_.close_after = true;
  finish_exchange();
}

void ClientConn::upstream_writable() {
  read_refused_ = false;  // budget: the app's queue drained, a refused read may try again
  update_read();
}

void ClientConn::release_upstream(bool reusable) {
  UpstreamConn* u = up_;
  if (u == nullptr) return;
  up_ = nullptr;
  u->detach();
  if (reusable) w_.pool().put(u);
  else u->close();
}

void ClientConn::finish_exchange() {
  if (!ex_.active) return;
  flush_batch();
  double secs = static_cast<double>(uv_hrtime() - ex_.started_ns) / 1e9;
  w_.metrics().count_request(ex_.status, secs, ex_.local);
  account_exchange();
  --w_.metrics().requests_in_flight;
  log_access();
  ++requests_;
  idle_since_ms_ = w_.now_ms();
  bool close_now = may_close_after_answer();
  // The app's slot goes to the next in line now; an answer the app made is a latency sample.
  release_slot(!ex_.local && ex_.status != 101);
  ex_ = Exchange{};
  scan_.reset();
  if (up_ != nullptr) release_upstream(false);
  if (close_now) {
    graceful_close(true);
    return;
  }
  llhttp_resume(&parser_);
  head_.shrink_if_large();
  if (parsing_) {
    resume_pending_ = true;
    return;
  }
  resume_input();
}

bool ClientConn::answer_probe() {
  std::string_view target = head_.target();
  std::string_view path = target.substr(0, target.find('?'));
  if (path != "/healthz" && path != "/readyz") return false;
  int status = 200;
  std::string body;
  if (w_.observer() == nullptr || !w_.observer()->probe(path, status, body)) return false;
  ex_.local = true;
  ex_.status = status;
  ex_.ebb_reason = "probe";
  ex_.response_started = true;
  ex_.close_after = announce_close(false);  // the body, if any, is read and dropped before the next request
  flush_batch();
  scratch_.clear();
  char head[160];
  int n = std::snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s\r\n",
                        status, http::status_text(status), body.size(), ex_.close_after ? "Connection: close\r\n" : "");
  scratch_.append(head, static_cast<size_t>(n));
  scratch_ += body;
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1);
  return true;
}

}  // namespace ebb
