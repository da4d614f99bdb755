// One client connection and its current exchange: reads and parses requests, forwards each to
// the app through an UpstreamConn, streams the answer back, then keeps the connection alive or
// closes it. Requests on one connection are handled one at a time, in order (pipelining).
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <string>

#include "http/head_scan.hpp"
#include "http/message.hpp"
#include "metrics.hpp"
#include "proxy/limiter.hpp"
#include "proxy/websocket.hpp"

namespace ebb {

class Worker;
class UpstreamConn;

// A SlotWaiter: its exchange's claim on upstream_limits (a slot at the app or a place in the
// queue) is released exactly once, by finish_exchange or close, however the exchange ends.
class ClientConn final : public SlotWaiter {
 public:
  ClientConn(Worker& w, std::uint64_t id);
  ClientConn(const ClientConn&) = delete;
  ClientConn& operator=(const ClientConn&) = delete;

  uv_tcp_t* tcp() { return &tcp_; }
  void start();     // after accept: timers, reading
  // Abortive and idempotent; the object is freed in the last close callback. A request on the
  // connection that is still unanswered is logged and counted under `why`.
  void close(Unanswered why);
  void on_phase();  // the worker's lifecycle phase changed
  void cut();       // drain deadline
  bool in_flight() const { return ex_.active; }
  std::uint64_t id() const { return id_; }

  // From the upstream side.
  void upstream_connected(UpstreamConn* up, int status);
  int upstream_informational(UpstreamConn* up);  // 1xx other than 101
  int upstream_head(UpstreamConn* up);           // 0, 1 (no body) or 2 (upgrade)
  int upstream_body(const char* at, size_t len);
  void upstream_done(UpstreamConn* up);          // final response complete
  void upstream_failed(UpstreamConn* up, UpstreamError kind, int err);
  void upstream_tunnel(const char* at, size_t len);
  void upstream_eof();                           // close-delimited end, or tunnel closed
  void upstream_writable();                      // queue to the app fell to the low watermark
  void cork();    // gather writes to this client until uncork()
  void uncork();
  void slot_granted() override;  // the queued request may go to the app now (admission.cpp)

  // Buffer budgets (proxy/budget.hpp). Bytes this connection holds: its write queues both
  // ways and its held input; 0 once closing (what it held is being freed).
  size_t held_bytes() const;
  size_t queued_to_client() const;
  void resume_memory();  // the worker's total fell under the pause mark
  void shed();           // closed to bring the total down (limits.max_memory)

  ClientConn* prev_ = nullptr;
  ClientConn* next_ = nullptr;

 private:
  enum class TimerFor { kNone, kHeader, kIdle, kBody, kSend, kRetry, kLinger, kWsClose, kQueue };

  struct Exchange {
    bool active = false;
    bool head_done = false;
    bool request_complete = false;
    bool response_started = false;  // the client has bytes of the answer
    bool response_chunked = false;
    // Before the answer: the request asked for the close (Connection: close, HTTP/1.0).
    // Once the answer's head is out: that head announced the close (announce_close).
    bool close_after = false;
    bool http10 = false;
    bool head_method = false;
    bool body_chunked = false;
    bool upgrade = false;
    bool websocket = false;
    bool replayable = false;
    bool retried = false;
    bool local = false;           // answered by ebb itself (probe or error)
    bool shed = false;            // turned away at upstream_limits: the 503 says Retry-After
    int status = 0;
    const char* ebb_reason = nullptr;  // why ebb answered itself (X-Ebb-Error), for the access log
    std::uint64_t head_bytes = 0;
    std::uint64_t body_bytes = 0;
    std::uint64_t started_ns = 0;  // uv_hrtime: uv_now is whole milliseconds
    std::uint64_t upstream_sent_ns = 0;   // the head went to the app
    std::uint64_t upstream_first_ns = 0;  // the app's answer began
    char request_id[40] = {0};            // the X-Request-Id ebb added, if it added one
    std::uint64_t retry_until_ms = 0;
    std::uint64_t retry_delay_ms = 0;
    std::uint64_t response_bytes = 0;
  };

  // Reading and parsing requests.
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void parse(char* data, size_t len);
  int on_message_begin();
  int on_url(const char* at, size_t len);
  int on_header_field(const char* at, size_t len);
  int on_header_value(const char* at, size_t len);
  int on_headers_complete();
  int on_body(const char* at, size_t len);
  int on_message_complete();
  static const llhttp_settings_t* settings();
  int reject(int status, const char* reason);  // from a parser callback

  // Forwarding (exchange.cpp).
  void begin_forward();
  void upstream_began();
  void connect_upstream();
  void send_request_head();
  int forward_body(const char* at, size_t len);
  void finish_exchange();
  void replay_or_fail(UpstreamConn* up, UpstreamError kind, int err);
  void release_upstream(bool reusable);
  bool answer_probe();

  // upstream_limits (admission.cpp): forward now, queue, or 503.
  int ask_for_slot();
  void queue_timed_out();
  void release_slot(bool latency_sample);

  // Writing to the client, closing, timers.
  void send(const uv_buf_t* bufs, unsigned n);  // counted as this exchange's answer
  void write_now(const uv_buf_t* bufs, unsigned n);
  void flush_batch();
  void account_exchange();  // byte counters of the exchange that ends
  char* chunk_line_buffer(char* fallback);
  void send_error(int status, const char* reason);
  bool announce_close(bool for_this_response) const;
  bool may_close_after_answer() const;
  void count_unanswered(Unanswered why, const char* what);
  void graceful_close(bool at_boundary);
  void update_read();
  void refresh_timer(bool progress);
  void arm(TimerFor t, std::uint64_t ms);
  void on_timer();
  void on_write_done(int status);
  void send_ws_close_and_close();
  void log_access();
  void resume_input();
  size_t read_allowance() const;  // how much one read may take (budget.hpp)
  void sync_held_input();         // keep the worker's total current with pending_in_/_body_
  static void on_closed(ClientConn* self);  // after the last close callback

  Worker& w_;
  std::uint64_t id_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_shutdown_t shutdown_req_;
  llhttp_t parser_;
  http::MessageHead head_;
  http::HeadScanner scan_;
  http::RequestInfo info_;
  Exchange ex_;
  std::string out_;           // the request head for the app, kept until it may be replayed
  std::string pending_body_;  // request bytes read before the app could take them
  std::string pending_in_;    // pipelined requests waiting for the current one to finish
  std::string scratch_;       // response heads and error answers
  char client_ip_[46] = {0};
  UpstreamConn* up_ = nullptr;
  WsFrameTracker ws_;
  TimerFor timer_for_ = TimerFor::kNone;
  std::uint64_t requests_ = 0;
  std::uint64_t idle_since_ms_ = 0;  // when the last answer ended (or the connection opened)
  int pending_closes_ = 0;
  bool reading_ = false;
  bool closing_ = false;
  bool lingering_ = false;
  bool shutdown_sent_ = false;
  bool tunnel_ = false;
  bool ws_close_pending_ = false;
  bool parsing_ = false;
  bool resume_pending_ = false;
  bool read_refused_ = false;        // a read found no room (budget or limits.max_memory)
  size_t held_input_accounted_ = 0;  // pending_in_ + pending_body_ as the worker's total has it
  bool client_eof_ = false;  // the client finished sending; close once the exchange ends
  // Closed between requests: bytes that still arrive are a request ebb will not answer.
  bool boundary_close_ = false;
  const char* reject_reason_ = nullptr;
  int reject_status_ = 0;
};

}  // namespace ebb
