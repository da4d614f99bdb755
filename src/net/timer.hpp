// A one-shot timer for an object that may be freed while its handle is still closing (an HTTP/2
// stream's deadline): the handle lives on the heap, made when first started, and frees itself in
// its close callback once the owner let go.
#pragma once

#include <uv.h>

#include <cstdint>

namespace ebb::net {

class HeapTimer {
 public:
  using Fire = void (*)(void* arg);
  HeapTimer() = default;
  HeapTimer(const HeapTimer&) = delete;
  HeapTimer& operator=(const HeapTimer&) = delete;
  ~HeapTimer() { release(); }

  void start(uv_loop_t* loop, std::uint64_t ms, Fire fire, void* arg) {
    if (h_ == nullptr) {
      h_ = new Handle{};
      uv_timer_init(loop, &h_->timer);
      h_->timer.data = h_;
    }
    h_->fire = fire;
    h_->arg = arg;
    uv_timer_start(&h_->timer, [](uv_timer_t* t) {
      auto* h = static_cast<Handle*>(t->data);
      if (h->arg != nullptr) h->fire(h->arg);
    }, ms, 0);
  }
  void stop() {
    if (h_ != nullptr) uv_timer_stop(&h_->timer);
  }
  void release() {
    if (h_ == nullptr) return;
    h_->arg = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->timer), [](uv_handle_t* x) { delete static_cast<Handle*>(x->data); });
    h_ = nullptr;
  }

 private:
  struct Handle {
    uv_timer_t timer;
    Fire fire = nullptr;
    void* arg = nullptr;
  };
  Handle* h_ = nullptr;
};

}  // namespace ebb::net
