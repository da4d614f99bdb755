// One probe at a time: connect (and for http, send a GET and read the answer's head), with a
// deadline; the result goes to the Server through the report callback.
#include "admin/readiness.hpp"

#include <algorithm>
#include <cstring>

#include "http/response_reader.hpp"
#include "net/conn.hpp"
#include "net/io.hpp"

namespace ebb {

// One probe: the shared connection skeleton, and for http the same response reader as the data
// path, so an app whose answer ebb would refuse to forward is not ready either.
class ReadinessCheck::Probe final : public net::Conn, private http::ResponseSink {
 public:
  explicit Probe(ReadinessCheck& owner) : net::Conn(owner.loop_, alloc), owner_(owner) {}
  void run() {
    start_timer(owner_.timeout_);
    int r = connect(reinterpret_cast<const sockaddr*>(&owner_.addr_));
    if (r < 0) owner_.finish(this, false, uv_err_name(r));
  }
  // The verdict is given once; the probe is freed after its handles close.
  bool done = false;

 private:
  static void alloc(uv_handle_t* h, size_t, uv_buf_t* b) {
    auto* p = static_cast<Probe*>(static_cast<net::Conn*>(h->data));
    *b = uv_buf_init(p->buf_, sizeof p->buf_);
  }
  void on_timer() override { owner_.finish(this, false, "timeout"); }
  void on_connect(int status) override {
    if (status < 0) {
      owner_.finish(this, false, uv_err_name(status));
      return;
    }
    if (owner_.kind_ == UpstreamCheck::kTcp) {
      owner_.finish(this, true, "connected");
      return;
    }
    reader_.begin(false, 16384);
    uv_buf_t b = uv_buf_init(owner_.request_.data(), static_cast<unsigned>(owner_.request_.size()));
    if (write(&b, 1) < 0) {
      owner_.finish(this, false, "write failed");
      return;
    }
    set_reading(true);
  }
  void on_read(ssize_t n, const uv_buf_t* b) override {
    if (done || n == 0) return;
    if (n < 0) {
      owner_.finish(this, false, uv_err_name(static_cast<int>(n)));
      return;
    }
    http::ResponseReader::Result r = reader_.feed(b->base, static_cast<size_t>(n));
    if (!done && r.kind == http::ResponseReader::Result::Kind::kError) owner_.finish(this, false, "bad response");
  }
  int on_informational() override { return 0; }
  int on_response_head() override {
    int status = reader_.status();
    bool ok = status >= 200 && status < 400;  // a 2xx or 3xx status counts as ready
    owner_.finish(this, ok, ok ? "status ok" : "bad status");
    return HPE_USER;  // the verdict is in; the rest is not read
  }
  int on_response_body(const char*, size_t) override { return 0; }

  ReadinessCheck& owner_;
  http::ResponseReader reader_{*this};
  char buf_[1024];
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
  current_ = new Probe(*this);
  current_->run();
}

void ReadinessCheck::finish(Probe* p, bool ok, const char* why) {
  if (p->done) return;
  p->done = true;
  if (current_ == p) current_ = nullptr;
  p->close_handles();
  if (!closed_) report_(ok, why);
}

}  // namespace ebb
