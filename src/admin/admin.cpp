// Admin connections: one request each, answered and closed. /drain?wait=true is held open
// until the drain ends. Every request that is refused or unknown is logged and counted.
#include "admin/admin.hpp"

#include <cstdio>
#include <optional>

#include "admin/admin_target.hpp"
#include "http/parser.hpp"
#include "log.hpp"
#include "net/io.hpp"

namespace ebb {

namespace {
constexpr std::uint64_t kRequestTimeoutMs = 10000;

// /reload answers with statuses the data path never makes itself.
const char* reason_phrase(int status) {
  switch (status) {
    case 409: return "Conflict";
    case 422: return "Unprocessable Content";
    default: return http::status_text(status);
  }
}
}

class AdminConn {
 public:
  AdminConn(AdminServer& s) : s_(s) {
    uv_tcp_init(s_.loop_, &tcp_);
    uv_timer_init(s_.loop_, &timer_);
    tcp_.data = this;
    timer_.data = this;
    llhttp_init(&parser_, HTTP_REQUEST, settings());
    parser_.data = this;
    next_ = s_.conns_;
    if (next_) next_->prev_ = this;
    s_.conns_ = this;
  }

  uv_tcp_t* tcp() { return &tcp_; }

  void start() {
    int len = sizeof peer_;
    uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer_), &len);
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<AdminConn*>(t->data)->close(); }, kRequestTimeoutMs, 0);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_),
                  [](uv_handle_t*, size_t, uv_buf_t* b) {
                    static thread_local char buf[4096];
                    *b = uv_buf_init(buf, sizeof buf);
                  },
                  [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
                    static_cast<AdminConn*>(st->data)->on_read(n, b);
                  });
  }

  void answer_waiter() {
    if (!waiting_) return;
    waiting_ = false;
    respond(200, "application/json", s_.backend_.drain_summary());
  }

  // Exit: flush what is queued, then close.
  void finish() {
    if (waiting_) answer_waiter();
    if (!answered_ || net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) == 0) close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (prev_) prev_->next_ = next_;
    else s_.conns_ = next_;
    if (next_) next_->prev_ = prev_;
    net::close_pair<AdminConn, &AdminConn::pending_closes_, &AdminConn::on_closed>(
        this, reinterpret_cast<uv_handle_t*>(&tcp_), reinterpret_cast<uv_handle_t*>(&timer_));
  }

 private:
  static void on_closed(AdminConn* self) { delete self; }
  static const llhttp_settings_t* settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t t;
      llhttp_settings_init(&t);
      using B = http::Bind<AdminConn>;
      t.on_url = B::data<&AdminConn::on_url>;
      t.on_header_field = B::data<&AdminConn::on_field>;
      t.on_header_value = B::data<&AdminConn::on_value>;
      t.on_message_complete = B::cb<&AdminConn::on_complete>;
      return t;
    }();
    return &s;
  }
  int on_url(const char* at, size_t len) { return check(head_.add_target(at, len)); }
  int on_field(const char* at, size_t len) { return check(head_.add_name(at, len)); }
  int on_value(const char* at, size_t len) { return check(head_.add_value(at, len)); }
  int check(size_t n) { return n > 16384 ? http::fail(&parser_, "admin request too large") : 0; }
  int on_complete() {
    complete_ = true;
    return HPE_PAUSED;
  }

  void on_read(ssize_t n, const uv_buf_t* b) {
    if (closed_) return;
    if (n < 0) {
      close();  // the caller went away (a waiting preStop hook that gave up, too)
      return;
    }
    if (answered_ || waiting_) return;
    llhttp_errno_t err = llhttp_execute(&parser_, b->base, static_cast<size_t>(n));
    if (err == HPE_PAUSED && complete_) {
      handle();
    } else if (err != HPE_OK) {
      reject(400, "malformed request");
    }
  }

  void handle() {
    std::string_view raw = head_.target();
    admin::AdminTarget t = admin::split_target(raw);
    auto method = static_cast<llhttp_method_t>(parser_.method);
    bool get = method == HTTP_GET || method == HTTP_HEAD;
    AdminBackend& b = s_.backend_;
    if (t.path == "/healthz") {
      if (!get) return reject(405, "method not allowed");
      return respond(200, "text/plain", "ok\n");
    }
    if (t.path == "/readyz") {
      if (!get) return reject(405, "method not allowed");
      std::string reason;
      int status = b.readiness(reason);
      return respond(status, "text/plain", reason + "\n");
    }
    if (t.path == "/metrics") {
      if (!get) return reject(405, "method not allowed");
      return respond(200, "text/plain; version=0.0.4", b.metrics_text());
    }
    if (t.path == "/reload") {
      if (method != HTTP_POST) return reject(405, "method not allowed (POST /reload)");
      if (!authorized(t.query, "reload request refused")) return;
      LOG_INFO("reload requested", {"caller", net::peer_ip(&tcp_)}, {"target", admin::redact_target(raw)});
      ReloadOutcome r = b.reload("admin");
      return respond(r.status, "text/plain", r.message + "\n", r.status == 200 ? nullptr : "reload failed");
    }
    if (t.path == "/drain") {
      if (!get && method != HTTP_POST) return reject(405, "method not allowed");
      if (!authorized(t.query, "drain refused")) return;
      bool wait = admin::query_param(t.query, "wait") == "true";
      LOG_INFO("drain requested", {"caller", net::peer_ip(&tcp_)}, {"wait", wait},
               {"target", admin::redact_target(raw)});
      b.start_drain("admin");
      if (wait && !b.drained()) {
        waiting_ = true;
        uv_timer_stop(&timer_);  // the kubelet puts no timeout on a preStop hook; neither do we
        return;
      }
      if (wait) return respond(200, "application/json", b.drain_summary());
      return respond(202, "text/plain", "draining\n");
    }
    reject(404, "no such admin endpoint");
  }

  // The kubelet ignores a hook's status, so a request turned away must at least be seen: a
  // warning with the caller and what it asked for (token redacted), and a counter.
  void reject(int status, const char* why) {
    AdminStats& st = s_.stats_;
    ++(status == 404 ? st.not_found : status == 405 ? st.bad_method : st.malformed);
    if (status == 400) {
      LOG_WARN("malformed admin request", {"caller", net::peer_ip(&tcp_)}, {"status", status},
               {"error", llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : why});
    } else {
      LOG_WARN("unknown admin request", {"caller", net::peer_ip(&tcp_)},
               {"method", llhttp_method_name(static_cast<llhttp_method_t>(parser_.method))},
               {"target", admin::redact_target(head_.target())}, {"status", status});
    }
    respond(status, "text/plain", std::string(why) + "\n", why);
  }

  // SPEC §3 token rules, shared by /drain and /reload. With admin.drain_token set, the caller
  // shows it as `Authorization: Bearer <t>` or, for kubelets before 1.26 that drop a hook's
  // httpHeaders, as `?token=<t>`; without one, only loopback callers are allowed. A refusal is
  // answered here (403), logged at warn as `what` and counted.
  bool authorized(std::string_view query, const char* what) {
    const std::string& token = s_.backend_.cfg().admin.drain_token;
    const char* why;
    if (!token.empty()) {
      std::optional<std::string> given = admin::query_param(query, admin::kTokenParam);
      if (bearer_matches(token) || (given && admin::token_equal(*given, token))) return true;
      why = "missing or wrong token (Authorization: Bearer <token> or ?token=<token>)";
    } else {
      if (net::is_loopback(peer_)) return true;
      why = "admin.drain_token is not set, so only loopback callers are allowed";
    }
    ++s_.stats_.refused;
    LOG_WARN(what, {"caller", net::peer_ip(&tcp_)},
             {"method", llhttp_method_name(static_cast<llhttp_method_t>(parser_.method))},
             {"target", admin::redact_target(head_.target())}, {"reason", why});
    respond(403, "text/plain", std::string(why) + "\n", why);
    return false;
  }

  bool bearer_matches(const std::string& token) const {
    for (size_t i = 0; i < head_.count(); ++i) {
      if (!http::iequals(head_.name(i), "authorization")) continue;
      std::string_view v = http::trim(head_.value(i));
      if (v.size() > 7 && http::iequals(v.substr(0, 7), "bearer "))
        return admin::token_equal(http::trim(v.substr(7)), token);
    }
    return false;
  }

  void respond(int status, const char* type, const std::string& body, const char* error = nullptr) {
    if (answered_ || closed_) return;
    answered_ = true;
    char head[256];
    bool head_only = parser_.method == HTTP_HEAD;
    int n = std::snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%sConnection: close\r\n\r\n",
                          status, reason_phrase(status), type, body.size(), error ? "X-Ebb-Error: " : "",
                          error ? error : "", error ? "\r\n" : "");
    out_.assign(head, static_cast<size_t>(n));
    if (!head_only) out_ += body;
    uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    int r = net::write(reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, [](uv_stream_t* s, int) {
      auto* self = static_cast<AdminConn*>(s->data);
      if (!self->closed_) self->shutdown();
    });
    if (r < 0) {
      close();
      return;
    }
    if (net::queued(reinterpret_cast<uv_stream_t*>(&tcp_)) == 0) shutdown();
  }

  // Write side first, then close when the caller closes (or the timer fires): no reset can
  // destroy the answer in the caller's buffer.
  void shutdown() {
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<AdminConn*>(t->data)->close(); }, 2000, 0);
    int r = uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t* req, int status) {
      auto* self = static_cast<AdminConn*>(req->handle->data);
      if (status < 0 && !self->closed_) self->close();
    });
    if (r < 0) close();
  }

  AdminServer& s_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_shutdown_t shutdown_req_;
  llhttp_t parser_;
  http::MessageHead head_;
  sockaddr_storage peer_{};
  std::string out_;
  int pending_closes_ = 0;
  bool complete_ = false;
  bool answered_ = false;
  bool waiting_ = false;
  bool closed_ = false;

 public:
  AdminConn* prev_ = nullptr;
  AdminConn* next_ = nullptr;
};

AdminServer::AdminServer(uv_loop_t* loop, AdminBackend& backend) : loop_(loop), backend_(backend) {
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
}

int AdminServer::listen(const sockaddr_storage& addr) {
  int r = net::listen_tcp(&listener_, addr, [](uv_stream_t* l, int status) {
    auto* self = static_cast<AdminServer*>(l->data);
    if (status < 0 || self->closing_) return;
    auto* c = new AdminConn(*self);
    if (uv_accept(l, reinterpret_cast<uv_stream_t*>(c->tcp())) != 0) {
      c->close();
      return;
    }
    c->start();
  }, 128);
  if (r == 0) listening_ = true;
  return r;
}

std::string AdminServer::bound_address() const { return net::sock_name(&listener_); }

void AdminServer::answer_drain_waiters() {
  for (AdminConn* c = conns_; c != nullptr;) {
    AdminConn* next = c->next_;
    c->answer_waiter();
    c = next;
  }
}

void AdminServer::close_all() {
  if (closing_) return;
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  for (AdminConn* c = conns_; c != nullptr;) {
    AdminConn* next = c->next_;
    c->finish();
    c = next;
  }
}

}  // namespace ebb
