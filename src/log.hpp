// Structured logging: one JSON object (or one human line) per event on stderr.
// The level is checked before anything is formatted; a line is written with one write(2),
// so lines from several event loops never interleave.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "config.hpp"

namespace ebb {

struct LogField {
  enum class Kind { kStr, kInt, kUint, kDouble, kBool };
  std::string_view key;
  Kind kind;
  std::string_view s{};
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double d = 0;
  bool b = false;

  LogField(std::string_view k, std::string_view v) : key(k), kind(Kind::kStr), s(v) {}
  LogField(std::string_view k, const char* v) : key(k), kind(Kind::kStr), s(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), kind(Kind::kStr), s(v) {}
  LogField(std::string_view k, int v) : key(k), kind(Kind::kInt), i(v) {}
  LogField(std::string_view k, long v) : key(k), kind(Kind::kInt), i(v) {}
  LogField(std::string_view k, long long v) : key(k), kind(Kind::kInt), i(v) {}
  LogField(std::string_view k, unsigned v) : key(k), kind(Kind::kUint), u(v) {}
  LogField(std::string_view k, unsigned long v) : key(k), kind(Kind::kUint), u(v) {}
  LogField(std::string_view k, unsigned long long v) : key(k), kind(Kind::kUint), u(v) {}
  LogField(std::string_view k, double v) : key(k), kind(Kind::kDouble), d(v) {}
  LogField(std::string_view k, bool v) : key(k), kind(Kind::kBool), b(v) {}
};

class Logger {
 public:
  void configure(LogFormat format, LogLevel level) {
    format_.store(format, std::memory_order_relaxed);
    level_.store(level, std::memory_order_relaxed);
  }
  bool enabled(LogLevel l) const { return l >= level_.load(std::memory_order_relaxed); }
  void write(LogLevel l, std::string_view msg, std::initializer_list<LogField> fields);

 private:
  std::atomic<LogFormat> format_{LogFormat::kJson};
  std::atomic<LogLevel> level_{LogLevel::kInfo};
};

// stderr is one per process, so its logger is too; everything else is per loop.
Logger& logger();

// Appends `s` to `out` as the inside of a JSON string.
void json_escape(std::string& out, std::string_view s);

}  // namespace ebb

#define EBB_LOG(level, msg, ...)                                   \
  do {                                                             \
    if (::ebb::logger().enabled(level))                            \
      ::ebb::logger().write(level, msg, {__VA_ARGS__});            \
  } while (0)
#define LOG_DEBUG(msg, ...) EBB_LOG(::ebb::LogLevel::kDebug, msg, __VA_ARGS__)
#define LOG_INFO(msg, ...) EBB_LOG(::ebb::LogLevel::kInfo, msg, __VA_ARGS__)
#define LOG_WARN(msg, ...) EBB_LOG(::ebb::LogLevel::kWarn, msg, __VA_ARGS__)
#define LOG_ERROR(msg, ...) EBB_LOG(::ebb::LogLevel::kError, msg, __VA_ARGS__)
