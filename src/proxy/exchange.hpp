// One request and its answer: the proxy's policy. An Exchange picks a connection to the app
// (the pool, or a connect with retries), forwards the head and streams the body, hears the
// app's answer and passes it on, then records the request and releases what it held. It talks
// to the side that asked through Downstream (an HTTP/1 connection or an HTTP/2 stream) and to
// the app through AppLeg and UpstreamSink (an HTTP/1 connection or an HTTP/2 stream), without
// knowing which.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "http/request_reader.hpp"
#include "metrics.hpp"
#include "proxy/limiter.hpp"
#include "proxy/app_leg.hpp"

namespace ebb {

class Worker;

// What an exchange needs from the side that asked. The downstream owns the framing of the
// answer, its connection's timer and the decision to close; the exchange owns the policy.
class Downstream {
 public:
  virtual std::uint64_t conn_id() const = 0;  // for logs
  virtual std::string_view peer_ip() const = 0;
  // The app's answer. Each returns false when the downstream closed meanwhile.
  virtual bool send_informational(const http::MessageHead& head, int status) = 0;
  // Final, or a 101. `head_only`: nothing follows (HTTP/2: gRPC's trailers-only answer).
  virtual bool send_head(const http::MessageHead& head, int status, bool head_only) = 0;
  virtual bool send_body(const char* at, size_t len) = 0;
  virtual bool send_end() = 0;                                  // the body is complete
  // The body is complete and the app sent trailers (gRPC's status): an HTTP/2 client gets them,
  // an HTTP/1 client in a chunked answer's trailer section; otherwise they are dropped.
  virtual bool send_trailers(const http::MessageHead& trailers) = 0;
  virtual bool send_tunnel(const char* at, size_t len) = 0;     // after a 101
  virtual void send_probe(int status, std::string_view body) = 0;
  // ebb's own error answer; it ends the exchange (or the connection, once an answer began).
  virtual void send_error(int status, const char* reason) = 0;
  virtual size_t send_queued() const = 0;
  virtual size_t held_bytes() const = 0;  // all it holds in buffers, for the budgets
  virtual void cork() = 0;  // gather what follows into one write, until uncork
  virtual void uncork() = 0;
  virtual void answer_complete() = 0;  // the answer is whole: end the exchange
  virtual void tunnel_closed() = 0;    // the app closed the tunnel
  virtual void request_flow() = 0;     // the app can take (more of) the request now
  virtual void abort(Unanswered why) = 0;  // close the connection, counting what is open
  // The exchange's own deadline (retry delay, queue wait) on the downstream's timer; 0 stops it.
  virtual void exchange_timer(std::uint64_t ms) = 0;

 protected:
  ~Downstream() = default;
};

class Exchange final : public SlotWaiter, private UpstreamSink {
 public:
  Exchange(Worker& w, Downstream& down) : w_(w), down_(down) {}
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // A request starts; `req` is null for an error found before its head began (nothing to log).
  void begin(const http::Request* req);
  // Its head is read: answer a probe, forward, queue, or refuse (status 503 and why).
  struct Refusal {
    int status = 0;
    const char* reason = nullptr;
  };
  Refusal start();
  int forward_body(const char* at, size_t len);  // 0, or HPE_USER when the app is gone
  int request_complete();                        // the whole request was read
  void hold_for_app(const char* at, size_t len); // bytes after an upgrade request
  bool to_app(const char* at, size_t len);       // a tunnel's client bytes; false: app gone
  void app_shutdown_write();                     // the tunnel's client finished sending
  void client_drained();                         // the queue to the client fell to the low watermark
  void on_timer();                               // the deadline asked for with exchange_timer
  void answered_locally(int status, const char* reason);  // the downstream answered itself
  void count_response_bytes(size_t n) { response_bytes_ += n; }
  void drop_app();   // the connection to the app is of no more use (the downstream is closing)
  // The answer is complete: count it, log it, release the slot and the app connection.
  void finish();
  // The downstream is closing with the exchange open: release without counting an answer.
  void abandon();

  bool active() const { return active_; }
  bool head_done() const { return req_ != nullptr && req_->head_done; }
  const http::Request* request() const { return req_; }
  bool local() const { return local_; }
  bool shed() const { return shed_; }
  bool response_started() const { return response_started_; }
  bool request_is_complete() const { return request_complete_; }
  int status() const { return status_; }
  void set_status(int s) { status_ = s; }
  bool has_app() const { return up_ != nullptr; }
  bool grpc() const { return grpc_; }  // an HTTP/2 request with content-type application/grpc*
  size_t held_for_app() const { return pending_body_.size(); }
  size_t app_queued() const;   // bytes written to the app that its kernel has not taken
  bool app_backed_up() const;   // more than the high watermark queued to the app
  bool app_can_take() const;    // connected, nothing held back, below the high watermark

 private:
  // Forwarding (exchange.cpp).
  void begin_forward();
  void open_leg(bool fresh);
  void send_request_head();
  void leg_broke(AppLeg* up, UpstreamError kind, int err);  // a send failed: let go of it, then as below
  void replay_or_fail(bool replay, UpstreamError kind, int err);
  void release_upstream(bool reusable);
  void upstream_began();
  void log_access();
  // upstream_limits (admission.cpp).
  Refusal ask_for_slot();
  void slot_granted() override;
  void queue_timed_out();
  void release_slot(bool latency_sample);
  // From the app connection.
  void upstream_connected(AppLeg* up, int status) override;
  int upstream_informational(AppLeg* up) override;
  int upstream_head(AppLeg* up) override;
  int upstream_body(const char* at, size_t len) override;
  void upstream_done(AppLeg* up) override;
  void upstream_failed(AppLeg* up, UpstreamError kind, int err) override;
  void upstream_tunnel(const char* at, size_t len) override;
  void upstream_eof() override;
  void upstream_writable() override;
  void upstream_read_begin() override;
  void upstream_read_end() override;
  size_t client_queued() const override { return down_.send_queued(); }
  size_t client_held() const override { return down_.held_bytes(); }
  std::uint64_t response_timeout() const override;
  void note_grpc_status(const http::MessageHead& fields);  // grpc-status, for the metrics

  enum class Waiting { kNone, kRetry, kQueue };

  Worker& w_;
  Downstream& down_;
  const http::Request* req_ = nullptr;
  AppLeg* up_ = nullptr;
  http::ForwardContext ctx_;  // what ebb adds to the head, kept until the request may be replayed
  std::string pending_body_;  // request bytes read before the app could take them
  Waiting waiting_ = Waiting::kNone;
  bool active_ = false;
  bool request_complete_ = false;
  bool response_started_ = false;  // the client has bytes of the answer
  bool local_ = false;             // answered by ebb itself (probe or error)
  bool shed_ = false;              // turned away at upstream_limits: the 503 says Retry-After
  bool retried_ = false;
  bool tunnel_ = false;
  bool grpc_ = false;
  int status_ = 0;
  int grpc_status_ = -1;                 // the gRPC answer's status (-1: none seen)
  std::uint64_t grpc_deadline_ms_ = 0;   // from grpc-timeout: when the app's answer is due
  const char* ebb_reason_ = nullptr;  // why ebb answered itself (X-Ebb-Error), for the access log
  std::uint64_t started_ns_ = 0;      // uv_hrtime: uv_now is whole milliseconds
  std::uint64_t upstream_sent_ns_ = 0;   // the head went to the app
  std::uint64_t upstream_first_ns_ = 0;  // the app's answer began
  std::uint64_t retry_until_ms_ = 0;
  std::uint64_t retry_delay_ms_ = 0;
  std::uint64_t response_bytes_ = 0;
  char request_id_[40] = {0};            // the X-Request-Id ebb added, if it added one
};

}  // namespace ebb
