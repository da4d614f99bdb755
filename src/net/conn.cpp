// The shared connection skeleton.
#include "net/conn.hpp"

#include "net/io.hpp"

namespace ebb::net {

namespace {
Conn* owner(void* data) { return static_cast<Conn*>(data); }
}  // namespace

Conn::Conn(uv_loop_t* loop, uv_alloc_cb alloc) : alloc_(alloc) {
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
}

void Conn::set_reading(bool want) {
  if (want == reading_ || closing_) return;
  reading_ = want;
  if (!want) {
    uv_read_stop(stream());
    return;
  }
  uv_read_start(stream(), alloc_, [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
    Conn* c = owner(s->data);
    if (!c->closing_) c->on_read(n, b);
  });
}

int Conn::write(const uv_buf_t* bufs, unsigned n, std::uint64_t* account) {
  return net::write(stream(), bufs, n, [](uv_stream_t* s, int status) { owner(s->data)->on_write_done(status); },
                    account);
}

size_t Conn::queued() const { return net::queued(stream()); }

void Conn::start_timer(std::uint64_t ms) {
  deadline_ = uv_now(loop()) + ms;
  if (armed_ != 0 && armed_ <= deadline_) return;  // fires in time; timer_fired looks again
  armed_ = deadline_;
  uv_timer_start(&timer_, timer_fired, ms, 0);
}

void Conn::timer_fired(uv_timer_t* t) {
  Conn* c = owner(t->data);
  c->armed_ = 0;
  if (c->deadline_ == 0 || c->closing_) return;
  std::uint64_t now = uv_now(c->loop());
  if (now < c->deadline_) {
    c->armed_ = c->deadline_;
    uv_timer_start(&c->timer_, timer_fired, c->deadline_ - now, 0);
    return;
  }
  c->deadline_ = 0;
  c->on_timer();
}

int Conn::shutdown() {
  if (shutdown_sent_) return 0;
  shutdown_sent_ = true;
  return uv_shutdown(&shutdown_req_, stream(), [](uv_shutdown_t* req, int status) {
    Conn* c = owner(req->handle->data);
    if (!c->closing_) c->on_shutdown(status);
  });
}

int Conn::connect(const sockaddr* addr) {
  return uv_tcp_connect(&connect_req_, &tcp_, addr, [](uv_connect_t* req, int status) {
    Conn* c = owner(req->handle->data);
    if (!c->closing_) c->on_connect(status);
  });
}

void Conn::close_handles() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  pending_closes_ = 2;
  uv_close_cb cb = [](uv_handle_t* h) {
    Conn* c = owner(h->data);
    if (--c->pending_closes_ > 0) return;
    c->on_closed();
    delete c;
  };
  close_handle(reinterpret_cast<uv_handle_t*>(&tcp_), cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), cb);
}

}  // namespace ebb::net
