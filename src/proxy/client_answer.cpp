// The answering side of a client connection: framing each answer (the app's, or ebb's own),
// the one rule for announcing and doing the close, gathering writes, and closing gracefully
// (write side first, then read and discard for a while, so that the last response is not
// destroyed by a reset; RFC 9112 §9.6).
#include <cstring>

#include "http/writer.hpp"
#include "log.hpp"
#include "proxy/client.hpp"
#include "proxy/worker.hpp"

namespace ebb {

// ---- answering --------------------------------------------------------------------------

bool ClientConn::send_informational(const http::MessageHead& head, int status) {
  http::ResponseFraming f;
  f.status = status;
  scratch_.clear();
  http::write_response_head(scratch_, head, http::analyse_response(head), f);
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1, 1);
  return !closing();
}

bool ClientConn::send_head(const http::MessageHead& head, int status, bool) {
  const http::Request& r = *ex_.request();
  http::ResponseInfo ri = http::analyse_response(head);
  http::ResponseFraming f;
  f.status = status;
  if (status == 101) {
    f.upgrade = true;
    tunnel_ = true;
    websocket_ = r.info.websocket;
  } else {
    bool no_body = r.head_method || status == 204 || status == 304;
    bool close_delimited = !no_body && !ri.has_content_length && r.http10;  // no chunked for 1.0
    f.chunked = !no_body && !ri.has_content_length && !r.http10;         // keeps the connection reusable
    // A declined upgrade: the client's next bytes are not HTTP. Answered before the whole request
    // arrived: the rest of it cannot be told from a next request.
    close_after_ = announce_close(r.upgrade || close_delimited || !ex_.request_is_complete());
    f.close = close_after_;
    f.keep_alive_10 = r.http10 && !close_after_;
  }
  response_chunked_ = f.chunked;
  scratch_.clear();
  http::write_response_head(scratch_, head, ri, f);
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1, 1);
  return !closing();
}

bool ClientConn::send_body(const char* at, size_t len) {
  if (!response_chunked_) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
    send(&b, 1, 0);
    return !closing();
  }
  char line[24];
  uv_buf_t bufs[3] = {uv_buf_init(line, static_cast<unsigned>(http::chunk_line(line, len))),
                      uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len)),
                      uv_buf_init(const_cast<char*>("\r\n"), 2)};
  send(bufs, 3, 1);  // the chunk line lives on this stack
  return !closing();
}

bool ClientConn::send_end() {
  if (response_chunked_) {
    uv_buf_t b = uv_buf_init(const_cast<char*>("0\r\n\r\n"), 5);
    send(&b, 1, 0);
  }
  return !closing();
}

// Trailers (an HTTP/2 app's) go in the chunked answer's trailer section (RFC 9112 §7.1.2); an
// answer framed by Content-Length has no place for them.
bool ClientConn::send_trailers(const http::MessageHead& trailers) {
  if (!response_chunked_) return send_end();
  scratch_.assign("0\r\n");
  for (size_t i = 0; i < trailers.count(); ++i) {
    std::string_view n = trailers.name(i), v = trailers.value(i);
    if (http::is_hop_by_hop(n) || !http::valid_field_value(v)) continue;
    scratch_.append(n);
    scratch_.append(": ", 2);
    scratch_.append(v);
    scratch_.append("\r\n", 2);
  }
  scratch_.append("\r\n", 2);
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1, 1);
  return !closing();
}

bool ClientConn::send_tunnel(const char* at, size_t len) {
  const auto* p = reinterpret_cast<const unsigned char*>(at);
  if (websocket_) {
    if (ws_close_pending_) {
      // The drain deadline passed: end the app's frame in progress, then say going away.
      size_t boundary = ws_.to_boundary(p, len);
      if (boundary != WsFrameTracker::kNone) {
        uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(boundary));
        send(&b, 1, 0);
        if (!closing()) send_ws_close_and_close();
        return false;
      }
    } else {
      ws_.consume(p, len);
    }
  }
  uv_buf_t b = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
  send(&b, 1, 0);
  return !closing();
}

void ClientConn::send_probe(int status, std::string_view body) {
  close_after_ = announce_close(false);  // the body, if any, is read and dropped before the next request
  http::LocalResponse r;
  r.status = status;
  r.body = body;
  r.close = close_after_;
  scratch_.clear();
  http::write_local_response(scratch_, r);
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1, 1);
}

void ClientConn::send_error(int status, const char* reason) {
  if (closing()) return;
  if (!ex_.active()) {  // an error before any request began (a framing error, a timeout)
    ex_.begin(nullptr);
    close_after_ = false;
    response_chunked_ = false;
  }
  if (ex_.response_started()) {  // the status line is out: all we can do is close
    if (ex_.status() == 0) ex_.set_status(status);
    close(Unanswered::kRequestError);
    return;
  }
  ex_.answered_locally(status, reason);
  // Unread request bytes (or an upgrade's) cannot be told from the next request.
  bool upgrade = ex_.request() != nullptr && ex_.request()->upgrade;
  close_after_ = announce_close(!ex_.request_is_complete() || upgrade || status == 400 || status == 408);
  scratch_.clear();
  // The app is at its concurrency limit: a second is long enough for a slot to free up or for
  // the client to try another pod, short enough not to make a client wait for nothing.
  http::write_error_response(scratch_, status, reason, close_after_, ex_.shed() ? "Retry-After: 1\r\n" : "");
  uv_buf_t b = uv_buf_init(scratch_.data(), static_cast<unsigned>(scratch_.size()));
  send(&b, 1, 1);
  if (closing()) return;
  finish_exchange();
}

void ClientConn::tunnel_closed() {
  // The app closed the tunnel: pass the end on after what is queued.
  close_after_ = true;
  finish_exchange();
}

// The one rule for an answer's Connection header. A connection is closed only after an answer that
// announced it (or when idle, or by a timeout or limit): a client that got no such announcement
// may already be sending its next request, so that request is read and answered, with the close
// announced then (SPEC §2). `for_this_response` carries what this answer's own shape demands.
bool ClientConn::announce_close(bool for_this_response) const {
  if (for_this_response || close_after_) return true;
  // Draining, or the client finished sending: the last answer the client will get. Requests
  // already pipelined behind this one are answered first, each in turn, so none is dropped.
  return (w_.phase() != Phase::kServing || client_eof_) && pending_in_.empty();
}

// May the connection close now that an answer is complete? Only if the answer announced it, or
// if the client can send nothing more.
bool ClientConn::may_close_after_answer() const { return close_after_ || (client_eof_ && pending_in_.empty()); }

void ClientConn::finish_exchange() {
  if (!ex_.active()) return;
  flush_batch();
  bool close_now = may_close_after_answer();
  // Answered before its body ended (a 413, an app that answers early): what the client still
  // sends is that body, not a request ebb failed to answer.
  bool at_boundary = ex_.request_is_complete() && !tunnel_;  // a tunnel's late bytes are no request
  delivering_ = !tunnel_ && queued() > 0;
  ex_.finish();
  ++requests_;
  idle_since_ms_ = w_.now_ms();
  response_chunked_ = false;
  reader_.next();
  if (close_now) {
    graceful_close(at_boundary);
    return;
  }
  if (reader_.in_callback()) {
    resume_pending_ = true;
    return;
  }
  resume_input();
}

// ---- writing and closing ----------------------------------------------------------------

// `transient`: bit i set when bufs[i] points into a buffer the caller reuses (see OutBatch).
void ClientConn::send(const uv_buf_t* bufs, unsigned n, bool transient) {
  if (closing()) return;
  for (unsigned i = 0; i < n; ++i) ex_.count_response_bytes(bufs[i].len);
  OutBatch& b = w_.batch();
  if (b.corked_by(this)) {
    unsigned mask = transient ? 1u : 0u;  // only a first piece is ever transient
    if (b.add(bufs, n, mask)) return;
    flush_batch();
    if (b.add(bufs, n, mask)) return;
  }
  write_now(bufs, n);
}

void ClientConn::write_now(const uv_buf_t* bufs, unsigned n) {
  // budget: what the kernel does not take is copied and counted in the worker's total.
  int r = write(bufs, n, w_.memory().counter());
  if (r < 0) {
    LOG_DEBUG("client write failed", {"conn", id_}, {"error", uv_err_name(r)});
    close(Unanswered::kClientClosed);
    return;
  }
  if (queued() > 0) refresh_timer(false);
}

void ClientConn::cork() { w_.batch().cork(this); }

void ClientConn::uncork() {
  flush_batch();
  if (w_.batch().corked_by(this)) w_.batch().uncork();
}

void ClientConn::flush_batch() {
  OutBatch& b = w_.batch();
  if (!b.corked_by(this)) return;
  b.flush([this](const uv_buf_t* bufs, unsigned n) { write_now(bufs, n); });
}

void ClientConn::on_write_done(int status) {
  w_.memory_released();  // budget: also for writes a close cancelled, which free their bytes
  if (closing()) return;
  if (status < 0) {
    close(Unanswered::kClientClosed);
    return;
  }
  size_t q = queued();
  if (q <= w_.budget().low) {
    ex_.client_drained();
    if (read_refused_) {  // budget: own progress lifts a refused read
      read_refused_ = false;
      update_read();
    }
  }
  if (q == 0) delivering_ = false;
  if (lingering_) {
    if (q == 0) graceful_close(boundary_close_);  // the last bytes are out: now the FIN
    else if (timer_for_ == TimerFor::kSend) arm(TimerFor::kSend, w_.cfg().timeouts.client_send);
    return;
  }
  refresh_timer(true);
}

void ClientConn::count_unanswered(Unanswered why, const char* what) {
  w_.metrics().count_unanswered(why);
  bool head = ex_.head_done();
  const http::Request* r = ex_.request();
  // A client that leaves is its own choice (and frequent): info. Every other reason is ebb's or
  // the app's failure to answer: warn.
  LogLevel level = why == Unanswered::kClientClosed ? LogLevel::kInfo : LogLevel::kWarn;
  EBB_LOG(level, what, {"conn", id_}, {"client", client_ip_}, {"reason", unanswered_name(why)},
          {"method", head ? r->method_name() : std::string_view{}},
          {"target", head ? r->head.target() : std::string_view{}});
}

// `at_boundary`: the close falls between requests, so any request bytes that still arrive were
// sent by a client that did not see the close coming; they are counted, never silently dropped.
void ClientConn::graceful_close(bool at_boundary) {
  if (closing()) return;
  boundary_close_ = at_boundary;
  if (at_boundary && !pending_in_.empty()) {
    boundary_close_ = false;
    pending_in_.clear();
    count_unanswered(Unanswered::kAfterClose, "pipelined request dropped after the connection was closed");
  }
  flush_batch();
  ex_.drop_app();
  lingering_ = true;
  tunnel_ = false;
  update_read();
  if (closing() || shutdown_sent()) return;
  if (queued() > 0) {
    // The answer's tail is still going out, at the client's pace: the send timeout guards it
    // (restarted by progress, as for any answer); the linger starts with the FIN. Past the
    // drain's deadline (a WebSocket's close frame, a tunnel the app ended): the linger only.
    if (cut_) {
      if (timer_for_ != TimerFor::kLinger) arm(TimerFor::kLinger, kLingerMs);
    } else if (timer_for_ != TimerFor::kSend) {
      arm(TimerFor::kSend, w_.cfg().timeouts.client_send);
    }
    return;
  }
  arm(TimerFor::kLinger, kLingerMs);
  if (shutdown() < 0) close(Unanswered::kClientClosed);
}

void ClientConn::on_shutdown(int status) {
  if (status < 0) close(Unanswered::kClientClosed);
  else if (client_eof_) close(Unanswered::kAfterClose);  // both sides are done: nothing to linger for
}

void ClientConn::close(Unanswered why) {
  if (closing()) return;
  // An answer read whole from the app but not yet written to the client is as unanswered as one
  // in flight: the client never gets all of it.
  if (delivering_) {
    delivering_ = false;
    count_unanswered(why, why == Unanswered::kClientClosed ? "client left before its whole answer arrived"
                                                           : "answer cut before it was delivered");
  }
  // A tunnel's request was answered (101); a cut tunnel is counted by cut().
  if (ex_.active() && ex_.head_done() && !tunnel_) {
    count_unanswered(why, why == Unanswered::kClientClosed ? "client left before its answer" : "request unanswered");
  } else if (!pending_in_.empty() && !(ex_.active() && ex_.request() && ex_.request()->upgrade) && !lingering_) {
    count_unanswered(why, "pipelined request unanswered");
  }
  close_handles();
  if (w_.batch().corked_by(this)) w_.batch().discard();
  ex_.abandon();
  sync_held_input();  // budget: closing, so the held input leaves the total
}

void ClientConn::on_closed() {
  w_.unlink(this);  // one handed over to an H2Conn closes here too; the H2Conn counts itself
  --w_.metrics().connections_active;
  if (w_.observer()) w_.observer()->on_connection_closed();
}

}  // namespace ebb
