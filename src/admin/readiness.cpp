// One probe at a time: connect (and for http, send a GET and read the status line), with a
// deadline; the result goes to the Server through the report callback.
#include "admin/readiness.hpp"

#include <algorithm>
#include <cstring>

#include "net/io.hpp"

namespace ebb {

struct ReadinessCheck::Probe {
  ReadinessCheck* owner;
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_timer_t timer;
  uv_write_t write_req;
  char status_line[16];
  size_t got = 0;
  int pending_closes_ = 0;
  static void on_closed(Probe* p) { delete p; }
  bool done = false;
};

ReadinessCheck::ReadinessCheck(uv_loop_t* loop, Report report) : loop_(loop), report_(std::move(report)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
}

ReadinessCheck::~ReadinessCheck() = default;

void ReadinessCheck::start(const Config& cfg, const sockaddr_storage& upstream, std::string host_header) {
  kind_ = cfg.readiness.upstream_check;
  interval_ = cfg.readiness.interval;
  timeout_ = std::min(cfg.readiness.interval, cfg.timeouts.upstream_connect);
  if (timeout_ == 0) timeout_ = 1;
  addr_ = upstream;
  request_ = "GET " + cfg.readiness.http_path + " HTTP/1.1\r\nHost: " + host_header +
             "\r\nUser-Agent: ebb-readiness\r\nConnection: close\r\n\r\n";
  if (kind_ == UpstreamCheck::kNone) {
    stop();
    return;
  }
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<ReadinessCheck*>(t->data)->run_one(); }, 0, interval_);
}

void ReadinessCheck::stop() {
  if (!closed_) uv_timer_stop(&timer_);
}

void ReadinessCheck::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  if (current_) finish(current_, false, "closing");
}

void ReadinessCheck::run_one() {
  if (current_ != nullptr) return;  // the previous probe is still within its deadline
  auto* p = new Probe{};
  p->owner = this;
  current_ = p;
  uv_tcp_init(loop_, &p->tcp);
  uv_timer_init(loop_, &p->timer);
  p->tcp.data = p;
  p->timer.data = p;
  uv_timer_start(&p->timer, [](uv_timer_t* t) {
    auto* pr = static_cast<Probe*>(t->data);
    pr->owner->finish(pr, false, "timeout");
  }, timeout_, 0);
  int r = uv_tcp_connect(&p->connect_req, &p->tcp, reinterpret_cast<const sockaddr*>(&addr_),
                         [](uv_connect_t* req, int status) {
    auto* pr = static_cast<Probe*>(req->handle->data);
    if (pr->done) return;
    ReadinessCheck* self = pr->owner;
    if (status < 0) {
      self->finish(pr, false, uv_err_name(status));
      return;
    }
    if (self->kind_ == UpstreamCheck::kTcp) {
      self->finish(pr, true, "connected");
      return;
    }
    uv_buf_t b = uv_buf_init(self->request_.data(), static_cast<unsigned>(self->request_.size()));
    uv_write(&pr->write_req, reinterpret_cast<uv_stream_t*>(&pr->tcp), &b, 1, [](uv_write_t*, int) {});
    uv_read_start(reinterpret_cast<uv_stream_t*>(&pr->tcp),
                  [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                    auto* q = static_cast<Probe*>(h->data);
                    *buf = uv_buf_init(q->status_line + q->got, static_cast<unsigned>(sizeof q->status_line - q->got));
                  },
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
                    auto* q = static_cast<Probe*>(s->data);
                    if (q->done || n == 0) return;
                    if (n < 0) {
                      q->owner->finish(q, false, uv_err_name(static_cast<int>(n)));
                      return;
                    }
                    q->got += static_cast<size_t>(n);
                    if (q->got < 12) return;  // "HTTP/1.1 200" not complete yet
                    // A 2xx or 3xx status counts as ready.
                    const char* b = q->status_line;
                    bool ok = std::memcmp(b, "HTTP/1.", 7) == 0 && (b[9] == '2' || b[9] == '3');
                    q->owner->finish(q, ok, ok ? "status ok" : "bad status");
                  });
  });
  if (r < 0) finish(p, false, uv_err_name(r));
}

void ReadinessCheck::finish(Probe* p, bool ok, const char* why) {
  if (p->done) return;
  p->done = true;
  if (current_ == p) current_ = nullptr;
  net::close_pair<Probe, &Probe::pending_closes_, &Probe::on_closed>(
      p, reinterpret_cast<uv_handle_t*>(&p->tcp), reinterpret_cast<uv_handle_t*>(&p->timer));
  if (!closed_) report_(ok, why);
}

}  // namespace ebb
