// Admin connections: one request each, answered and closed. /drain?wait=true is held open
// until the drain ends. Every request that is refused or unknown is logged and counted.
#include "admin/admin.hpp"

#include <cstdio>
#include <optional>

#include "admin/admin_target.hpp"
#include "http/request_reader.hpp"
#include "http/writer.hpp"
#include "log.hpp"
#include "net/conn.hpp"
#include "net/io.hpp"

namespace ebb {

namespace {
constexpr std::uint64_t kRequestTimeoutMs = 10000;
constexpr std::uint64_t kLingerMs = 2000;
}  // namespace

class AdminConn final : public net::Conn, public net::Linked<AdminConn>, private http::RequestSink {
 public:
  explicit AdminConn(AdminServer& s) : net::Conn(s.loop_, alloc), s_(s) { s_.conns_.push_front(this); }

  void start() {
    int len = sizeof peer_;
    uv_tcp_getpeername(tcp(), reinterpret_cast<sockaddr*>(&peer_), &len);
    start_timer(kRequestTimeoutMs);
    set_reading(true);
  }

  void answer_waiter() {
    if (!waiting_) return;
    waiting_ = false;
    respond(200, "application/json", s_.backend_.drain_summary());
  }

  // Exit: flush what is queued, then close.
  void finish() {
    if (waiting_) answer_waiter();
    if (!answered_ || queued() == 0) close();
  }

  void close() {
    if (closing()) return;
    s_.conns_.remove(this);
    close_handles();
  }

 private:
  static void alloc(uv_handle_t* h, size_t, uv_buf_t* b) {
    auto* c = static_cast<AdminConn*>(static_cast<net::Conn*>(h->data));
    *b = uv_buf_init(c->s_.read_buf_, sizeof c->s_.read_buf_);
  }
  void on_timer() override { close(); }
  void on_shutdown(int status) override {
    if (status < 0) close();
  }
  void on_write_done(int) override {
    if (!closing() && !shutdown_sent()) linger();
  }
  void on_request_begin() override {}
  int on_request_head() override { return 0; }
  int on_request_body(const char*, size_t) override { return 0; }
  int on_request_complete() override {
    complete_ = true;
    return 0;
  }

  void on_read(ssize_t n, const uv_buf_t* b) override {
    if (n < 0) {
      close();  // the caller went away (a waiting preStop hook that gave up, too)
      return;
    }
    if (answered_ || waiting_ || complete_) return;
    http::RequestLimits limits{kMaxRequestBytes, kMaxRequestBytes, 0, false};
    http::RequestReader::Result r = reader_.feed(b->base, static_cast<size_t>(n), limits);
    if (r.kind == http::RequestReader::Result::Kind::kError) {
      error_ = r.reason;
      reject(400, "malformed request");
    } else if (complete_) {
      handle();
    }
  }

  void handle() {
    std::string_view raw = req().head.target();
    admin::AdminTarget t = admin::split_target(raw);
    llhttp_method_t method = req().method;
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
      LOG_INFO("reload requested", {"caller", net::peer_ip(tcp())}, {"target", admin::redact_target(raw)});
      ReloadOutcome r = b.reload("admin");
      return respond(r.status, "text/plain", r.message + "\n", r.status == 200 ? nullptr : "reload failed");
    }
    if (t.path == "/drain") {
      if (!get && method != HTTP_POST) return reject(405, "method not allowed");
      if (!authorized(t.query, "drain refused")) return;
      bool wait = admin::query_param(t.query, "wait") == "true";
      LOG_INFO("drain requested", {"caller", net::peer_ip(tcp())}, {"wait", wait},
               {"target", admin::redact_target(raw)});
      b.start_drain("admin");
      if (wait && !b.drained()) {
        waiting_ = true;
        stop_timer();  // the kubelet puts no timeout on a preStop hook; neither do we
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
      LOG_WARN("malformed admin request", {"caller", net::peer_ip(tcp())}, {"status", status},
               {"error", error_ != nullptr ? error_ : why});
    } else {
      LOG_WARN("unknown admin request", {"caller", net::peer_ip(tcp())}, {"method", req().method_name()},
               {"target", admin::redact_target(req().head.target())}, {"status", status});
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
    LOG_WARN(what, {"caller", net::peer_ip(tcp())}, {"method", req().method_name()},
             {"target", admin::redact_target(req().head.target())}, {"reason", why});
    respond(403, "text/plain", std::string(why) + "\n", why);
    return false;
  }

  bool bearer_matches(const std::string& token) const {
    const http::MessageHead& head = req().head;
    for (size_t i = 0; i < head.count(); ++i) {
      if (!http::iequals(head.name(i), "authorization")) continue;
      std::string_view v = http::trim(head.value(i));
      if (v.size() > 7 && http::iequals(v.substr(0, 7), "bearer "))
        return admin::token_equal(http::trim(v.substr(7)), token);
    }
    return false;
  }

  void respond(int status, const char* type, const std::string& body, const char* error = nullptr) {
    if (answered_ || closing()) return;
    answered_ = true;
    http::LocalResponse r;
    r.status = status;
    r.content_type = type;
    r.body = body;
    r.error = error != nullptr ? error : "";
    r.close = true;
    r.head_only = req().method == HTTP_HEAD;
    out_.clear();
    http::write_local_response(out_, r);
    uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    if (write(&buf, 1) < 0) {
      close();
      return;
    }
    if (queued() == 0) linger();
  }

  // Write side first, then close when the caller closes (or the timer fires): no reset can
  // destroy the answer in the caller's buffer.
  void linger() {
    start_timer(kLingerMs);
    if (shutdown() < 0) close();
  }

  const http::Request& req() const { return reader_.request(); }

  static constexpr std::uint64_t kMaxRequestBytes = 16384;
  AdminServer& s_;
  http::RequestReader reader_{*this};
  sockaddr_storage peer_{};
  std::string out_;
  const char* error_ = nullptr;  // why the request could not be parsed
  bool complete_ = false;
  bool answered_ = false;
  bool waiting_ = false;
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
    if (uv_accept(l, c->stream()) != 0) {
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
  conns_.for_each([](AdminConn* c) { c->answer_waiter(); });
}

void AdminServer::close_all() {
  if (closing_) return;
  closing_ = true;
  net::close_handle(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  conns_.for_each([](AdminConn* c) { c->finish(); });
}

}  // namespace ebb
