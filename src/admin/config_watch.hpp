// Reloads the config when its file changes, the Kubernetes way: a ConfigMap volume swaps the
// `..data` symlink of the mounted directory (the file itself is a symlink chain), so the watch
// is on the file's DIRECTORY. Events are debounced, and a reload happens only when the file's
// content differs from what was last seen.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

namespace ebb {

class ConfigWatch {
 public:
  // on_change runs (on the loop) after the file's content changed and settled.
  ConfigWatch(uv_loop_t* loop, std::function<void()> on_change);
  // Starts watching `path`'s directory; returns 0 or a negative libuv error (logged by the caller).
  int start(const std::string& path);
  // The content now on disk becomes the reference (after a reload from any trigger, so a
  // SIGHUP reload is not repeated by the watch, and a refused file is not retried until it changes).
  void resync();
  void close();  // idempotent; the handles are closed on the loop

 private:
  void on_event();
  void on_settled();
  bool read(std::string& out) const;

  uv_loop_t* loop_;
  std::function<void()> on_change_;
  uv_fs_event_t event_;
  uv_timer_t debounce_;
  std::string path_;
  std::string seen_;  // the content last seen ("" when unreadable)
  bool started_ = false;
  bool closed_ = false;
};

}  // namespace ebb
