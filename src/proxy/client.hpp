// One HTTP/1 client connection: it reads requests (RequestReader), runs each as an Exchange,
// one at a time and in order (pipelining), frames the answers, and keeps the connection alive
// or closes it. It is the Exchange's Downstream, and the one owner of "may this connection
// close now?" (announce_close, may_close_after_answer).
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

#include "http/request_reader.hpp"
#include "metrics.hpp"
#include "proxy/exchange.hpp"
#include "proxy/websocket.hpp"
#include "proxy/worker.hpp"

namespace ebb {

class ClientConn final : public Client, private http::RequestSink, private Downstream {
 public:
  ClientConn(Worker& w, std::uint64_t id);

  void start();  // after accept: timers, reading
  // Abortive and idempotent; the object is freed after the close callbacks. A request on the
  // connection that is still unanswered is logged and counted under `why`.
  void close(Unanswered why) override;
  void on_phase() override;
  void cut() override;
  bool in_flight() const { return ex_.active(); }
  std::uint64_t id() const override { return id_; }
  // Buffer budgets (proxy/budget.hpp): its write queues both ways and its held input.
  size_t held_bytes() const override;
  void resume_memory() override;  // the worker's total fell under the pause mark
  void shed() override;           // closed to bring the total down (limits.max_memory)

 private:
  enum class TimerFor { kNone, kHeader, kIdle, kBody, kSend, kExchange, kLinger, kWsClose };
  // After the FIN, how long the client's last bytes are read and dropped before the close.
  static constexpr std::uint64_t kLingerMs = 2000;

  // The socket.
  void on_read(ssize_t nread, const uv_buf_t* buf) override;
  void on_timer() override;
  void on_write_done(int status) override;
  void on_shutdown(int status) override;
  void on_closed() override;
  // Requests, from the reader.
  void parse(char* data, size_t len);
  void resume_input();
  void on_request_begin() override;
  int on_request_head() override;
  int on_request_body(const char* at, size_t len) override;
  int on_request_complete() override;
  // The exchange's downstream.
  std::uint64_t conn_id() const override { return id_; }
  std::string_view peer_ip() const override { return client_ip_; }
  bool send_informational(const http::MessageHead& head, int status) override;
  bool send_head(const http::MessageHead& head, int status, bool head_only) override;
  bool send_body(const char* at, size_t len) override;
  bool send_end() override;
  bool send_trailers(const http::MessageHead& trailers) override;
  bool send_tunnel(const char* at, size_t len) override;
  void send_probe(int status, std::string_view body) override;
  void send_error(int status, const char* reason) override;
  size_t send_queued() const override { return queued(); }
  void cork() override;
  void uncork() override;
  void answer_complete() override { finish_exchange(); }
  void tunnel_closed() override;
  void request_flow() override;
  void abort(Unanswered why) override { close(why); }
  void exchange_timer(std::uint64_t ms) override;
  // Writing, closing, timers.
  void send(const uv_buf_t* bufs, unsigned n, bool transient);  // counted as this exchange's answer
  void write_now(const uv_buf_t* bufs, unsigned n);
  void flush_batch();
  bool announce_close(bool for_this_response) const;
  bool may_close_after_answer() const;
  void finish_exchange();
  void count_unanswered(Unanswered why, const char* what);
  void graceful_close(bool at_boundary);
  void update_read();
  void refresh_timer(bool progress);
  void arm(TimerFor t, std::uint64_t ms);
  void send_ws_close_and_close();
  size_t read_allowance() const;  // how much one read may take (budget.hpp)
  void sync_held_input();         // keep the worker's total current with the held input
  static void alloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  bool hand_over_h2(const char* data, size_t len);  // the HTTP/2 preface: H2Conn takes the socket

  Worker& w_;
  std::uint64_t id_;
  http::RequestReader reader_{*this};
  Exchange ex_;
  std::string pending_in_;  // pipelined requests waiting for the current one to finish
  std::string scratch_;     // heads and answers ebb writes (copied if they must wait in the batch)
  char client_ip_[46] = {0};
  WsFrameTracker ws_;
  TimerFor timer_for_ = TimerFor::kNone;
  std::uint64_t requests_ = 0;
  std::uint64_t idle_since_ms_ = 0;  // when the last answer ended (or the connection opened)
  // The current answer's framing. Before the answer: the request asked for the close. Once its
  // head is out: that head announced the close (announce_close).
  bool close_after_ = false;
  bool response_chunked_ = false;
  bool lingering_ = false;
  bool tunnel_ = false;
  bool websocket_ = false;
  bool ws_close_pending_ = false;
  bool resume_pending_ = false;
  bool client_eof_ = false;  // the client finished sending; close once the exchange ends
  // The last answer is whole from the app but not all written to the client yet: a close now
  // cuts an answered request, and counts as unanswered (close()).
  bool delivering_ = false;
  bool cut_ = false;  // cut at the drain's deadline: what still goes out gets the linger, no more
  // Closed between requests: bytes that still arrive are a request ebb will not answer.
  bool boundary_close_ = false;
  bool read_refused_ = false;        // a read found no room (budget or limits.max_memory)
  size_t held_input_accounted_ = 0;  // held input as the worker's total has it
  bool sniffed_ = false;      // the first bytes were looked at for the HTTP/2 preface
  std::string preface_;       // the first bytes while they may still be the HTTP/2 preface
};

}  // namespace ebb
