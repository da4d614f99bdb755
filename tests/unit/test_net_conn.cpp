// net::Conn's lazy deadline on a real libuv loop: on_timer runs once the latest deadline set is
// reached, never early, never for a deadline that was replaced or stopped.
#include <uv.h>

#include <catch2/catch.hpp>
#include <functional>
#include <vector>

#include "net/conn.hpp"

namespace {

class TimedConn final : public ebb::net::Conn {
 public:
  // `fired` outlives the connection (a closed one frees itself): the loop times on_timer ran at.
  TimedConn(uv_loop_t* loop, std::vector<std::uint64_t>& fired) : Conn(loop, nullptr), fired(fired) {}
  std::vector<std::uint64_t>& fired;
  std::function<void()> then;        // what on_timer does after recording

  void close() { close_handles(); }

 protected:
  void on_read(ssize_t, const uv_buf_t*) override {}
  void on_timer() override {
    fired.push_back(uv_now(loop()));
    if (then) then();
  }
};

struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  // Runs until nothing is pending: the connection's timer is the only handle that can be.
  void run() { uv_run(&loop, UV_RUN_DEFAULT); }
};

}  // namespace

TEST_CASE("a deadline moved later fires once, at the later time") {
  Loop l;
  std::vector<std::uint64_t> fired;
  auto* c = new TimedConn(&l.loop, fired);
  std::uint64_t start = uv_now(&l.loop);
  c->start_timer(10);
  c->start_timer(60);  // later: the libuv timer stays where it is
  l.run();
  REQUIRE(fired.size() == 1);
  CHECK(fired[0] >= start + 60);
  c->close();
}

TEST_CASE("a deadline moved sooner fires at the sooner time, once") {
  Loop l;
  std::vector<std::uint64_t> fired;
  auto* c = new TimedConn(&l.loop, fired);
  std::uint64_t start = uv_now(&l.loop);
  c->start_timer(5000);
  c->start_timer(20);
  c->then = [&] { c->close(); };  // closing stops the old libuv timer too
  l.run();
  REQUIRE(fired.size() == 1);
  CHECK(fired[0] >= start + 20);
  CHECK(fired[0] < start + 5000);
}

TEST_CASE("a stopped deadline never fires, even though the libuv timer was set") {
  Loop l;
  std::vector<std::uint64_t> fired;
  auto* c = new TimedConn(&l.loop, fired);
  c->start_timer(15);
  c->stop_timer();
  l.run();
  CHECK(fired.empty());
  c->close();
}

TEST_CASE("on_timer may set the next deadline") {
  Loop l;
  std::vector<std::uint64_t> fired;
  auto* c = new TimedConn(&l.loop, fired);
  std::uint64_t start = uv_now(&l.loop);
  c->start_timer(10);
  c->then = [&] {
    if (fired.size() == 1) c->start_timer(30);
  };
  l.run();
  REQUIRE(fired.size() == 2);
  CHECK(fired[1] >= start + 40);
  c->close();
}

TEST_CASE("a stopped deadline set again fires at the new time") {
  Loop l;
  std::vector<std::uint64_t> fired;
  auto* c = new TimedConn(&l.loop, fired);
  std::uint64_t start = uv_now(&l.loop);
  c->start_timer(10);
  c->stop_timer();
  c->start_timer(40);
  l.run();
  REQUIRE(fired.size() == 1);
  CHECK(fired[0] >= start + 40);
  c->close();
}
