// The config file watch: inotify (through uv_fs_event) on the directory, a debounce timer, and a
// content comparison, so a ConfigMap's several renames give one reload and a touch gives none.
#include "admin/config_watch.hpp"

#include "config.hpp"
#include "log.hpp"

namespace ebb {

namespace {
// The kubelet's atomic writer makes a directory, a symlink, a rename and a removal in quick
// succession; an editor writes a temp file and renames it. Wait for quiet before reading.
constexpr std::uint64_t kDebounceMs = 150;
}  // namespace

ConfigWatch::ConfigWatch(uv_loop_t* loop, std::function<void()> on_change)
    : loop_(loop), on_change_(std::move(on_change)) {
  uv_fs_event_init(loop_, &event_);
  uv_timer_init(loop_, &debounce_);
  event_.data = this;
  debounce_.data = this;
}

int ConfigWatch::start(const std::string& path) {
  path_ = path;
  std::string dir = ".";
  if (auto slash = path.rfind('/'); slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  resync();
  int r = uv_fs_event_start(
      &event_, [](uv_fs_event_t* h, const char*, int, int status) {
        if (status == 0) static_cast<ConfigWatch*>(h->data)->on_event();
      },
      dir.c_str(), 0);
  started_ = r == 0;
  return r;
}

void ConfigWatch::resync() {
  if (!read(seen_)) seen_.clear();
}

void ConfigWatch::on_event() {
  if (closed_) return;
  uv_timer_start(&debounce_, [](uv_timer_t* t) { static_cast<ConfigWatch*>(t->data)->on_settled(); }, kDebounceMs, 0);
}

void ConfigWatch::on_settled() {
  std::string now;
  if (!read(now)) now.clear();
  if (now == seen_) {  // another file of the directory, or the same bytes rewritten
    LOG_DEBUG("config watch: content unchanged", {"path", path_});
    return;
  }
  LOG_DEBUG("config watch: content changed", {"path", path_});
  on_change_();
}

bool ConfigWatch::read(std::string& out) const {
  return read_whole_file(path_, out) == 0;
}

void ConfigWatch::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&event_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&debounce_), nullptr);
}

}  // namespace ebb
