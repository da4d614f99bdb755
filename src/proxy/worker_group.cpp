// Running the workers: threads, the hand-over of accepted connections, and calls across threads.
#include "proxy/worker_group.hpp"

#include <unistd.h>

#include "log.hpp"

namespace ebb {

// A worker's own loop and thread. The mutex guards only the hand-over queues; the worker's state
// is touched by its thread alone, and by others only through tasks it runs itself.
struct WorkerGroup::Thread final : WorkerObserver {
  explicit Thread(WorkerGroup& g) : group(g) {
    uv_loop_init(&loop);
    uv_async_init(&loop, &wake, [](uv_async_t* a) { static_cast<Thread*>(a->data)->on_wake(); });
    wake.data = this;
  }

  void on_connection_closed() override { uv_async_send(&group.closed_async_); }
  bool probe(std::string_view path, int& status, std::string& body) override {
    return group.observer_->probe(path, status, body);
  }

  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> g(mu);
      tasks.push_back(std::move(task));
    }
    uv_async_send(&wake);
  }

  void on_wake() {
    std::vector<int> fds;
    std::vector<std::function<void()>> todo;
    {
      std::lock_guard<std::mutex> g(mu);
      fds.swap(inbox);
      todo.swap(tasks);
    }
    for (int fd : fds) worker->adopt_handed(fd);
    for (auto& t : todo) t();
  }

  size_t load() const { return worker->load(); }

  WorkerGroup& group;
  uv_loop_t loop;
  uv_async_t wake;
  Worker* worker = nullptr;
  std::mutex mu;
  std::vector<int> inbox;                    // guarded by mu
  std::vector<std::function<void()>> tasks;  // guarded by mu
  std::thread thread;
};

WorkerGroup::WorkerGroup(uv_loop_t* main, const Config* cfg, WorkerObserver* observer, unsigned count)
    : main_(main), observer_(observer) {
  if (count <= 1) {
    workers_.push_back(std::make_unique<Worker>(main, cfg, observer, 0, 1));
    return;
  }
  uv_async_init(main_, &closed_async_, [](uv_async_t* a) { static_cast<WorkerGroup*>(a->data)->on_closed_async(); });
  closed_async_.data = this;
  for (unsigned i = 0; i < count; ++i) {
    auto t = std::make_unique<Thread>(*this);
    workers_.push_back(std::make_unique<Worker>(&t->loop, cfg, t.get(), i, count));
    t->worker = workers_.back().get();
    threads_.push_back(std::move(t));
  }
  // Everything above was set up on this thread; starting a thread publishes it to that thread.
  for (auto& t : threads_) {
    Thread* tp = t.get();
    tp->thread = std::thread([tp] {
      uv_run(&tp->loop, UV_RUN_DEFAULT);
      if (int rc = uv_loop_close(&tp->loop); rc != 0)
        LOG_ERROR("worker loop closed with handles still open", {"worker", tp->worker->index()},
                  {"error", uv_err_name(rc)});
    });
  }
}

WorkerGroup::~WorkerGroup() {
  stop();
  workers_.clear();  // before their loops (in threads_) go
}

void WorkerGroup::on_accept(net::Listener& listener) {
  if (threads_.empty()) {
    workers_[0]->on_accept(listener.stream());
    return;
  }
  int fd = listener.take_accepted();
  if (fd >= 0) dispatch(fd);
}

void WorkerGroup::adopt(int fd) {
  if (threads_.empty()) workers_[0]->adopt(fd);
  else dispatch(fd);
}

// The worker holding the fewest connections, handed-over ones included (a burst of accepts runs
// ahead of the workers' own counts). Ties go round, so short connections spread too.
void WorkerGroup::dispatch(int fd) {
  if (stopped_ || connections() >= cap_) {
    // Over limits.max_connections: closed at once, as a single loop does, so the listener keeps
    // accepting and the client sees a clean close rather than a SYN timeout.
    ::close(fd);
    ++rejected_;
    LOG_DEBUG("connection limit reached", {"limit", cap_});
    return;
  }
  size_t n = threads_.size();
  size_t best = next_ % n;
  size_t best_load = threads_[best]->load();
  for (size_t k = 1; k < n && best_load > 0; ++k) {
    size_t i = (next_ + k) % n;
    size_t l = threads_[i]->load();
    if (l < best_load) {
      best = i;
      best_load = l;
    }
  }
  next_ = best + 1;
  Thread& t = *threads_[best];
  t.worker->count_handed();
  {
    std::lock_guard<std::mutex> g(t.mu);
    t.inbox.push_back(fd);
  }
  uv_async_send(&t.wake);
}

void WorkerGroup::set_connection_cap(size_t cap) {
  cap_ = cap;
  if (threads_.empty()) workers_[0]->set_connection_cap(cap);
}

size_t WorkerGroup::connections() const {
  if (threads_.empty()) return workers_[0]->connections();
  size_t n = 0;
  for (const auto& t : threads_) n += t->load();
  return n;
}

void WorkerGroup::for_each(const std::function<void(Worker&)>& fn) {
  if (threads_.empty()) {
    fn(*workers_[0]);
    return;
  }
  if (stopped_) return;  // their loops have ended: nothing would run it
  std::mutex m;
  std::condition_variable cv;
  size_t left = threads_.size();
  for (auto& t : threads_) {
    Worker* w = t->worker;
    t->post([&, w] {
      fn(*w);
      std::lock_guard<std::mutex> g(m);
      if (--left == 0) cv.notify_one();  // under the lock: m and cv live until the waiter sees 0
    });
  }
  std::unique_lock<std::mutex> l(m);
  cv.wait(l, [&] { return left == 0; });
}

std::vector<Metrics> WorkerGroup::shards() {
  std::vector<Metrics> out(workers_.size());
  for_each([&](Worker& w) { out[w.index()] = w.metrics(); });
  return out;
}

Metrics WorkerGroup::sum_of(const std::vector<Metrics>& s) const {
  Metrics total = s[0];
  for (size_t i = 1; i < s.size(); ++i) total.add(s[i]);
  total.connections_rejected += rejected_;
  return total;
}

void WorkerGroup::on_closed_async() { observer_->on_connection_closed(); }

void WorkerGroup::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (threads_.empty()) {
    workers_[0]->close_all();
    return;
  }
  for (auto& t : threads_) {
    Thread* tp = t.get();
    tp->post([tp] {
      tp->worker->close_all();
      uv_close(reinterpret_cast<uv_handle_t*>(&tp->wake), nullptr);
    });
  }
  // Each loop ends once its connections have closed (one turn of it): a short wait, at exit only.
  for (auto& t : threads_) t->thread.join();
  uv_close(reinterpret_cast<uv_handle_t*>(&closed_async_), nullptr);
}

}  // namespace ebb
