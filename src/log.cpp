// Formats log lines as JSON or as text for humans, and writes each with a single write(2).
#include "log.hpp"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace ebb {

namespace {

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

void append_timestamp(std::string& out) {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        static_cast<int>(ms % 1000));
  out.append(buf, static_cast<size_t>(n));
}

void append_value(std::string& out, const LogField& f, bool json) {
  char buf[32];
  switch (f.kind) {
    case LogField::Kind::kStr:
      if (json) {
        out += '"';
        json_escape(out, f.s);
        out += '"';
      } else {
        out.append(f.s);
      }
      return;
    case LogField::Kind::kInt: {
      auto r = std::to_chars(buf, buf + sizeof buf, f.i);
      out.append(buf, r.ptr);
      return;
    }
    case LogField::Kind::kUint: {
      auto r = std::to_chars(buf, buf + sizeof buf, f.u);
      out.append(buf, r.ptr);
      return;
    }
    case LogField::Kind::kDouble: {
      int n = std::snprintf(buf, sizeof buf, "%.3f", f.d);
      out.append(buf, static_cast<size_t>(n));
      return;
    }
    case LogField::Kind::kBool:
      out += f.b ? "true" : "false";
      return;
  }
}

}  // namespace

void json_escape(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

Logger& logger() {
  static Logger instance;
  return instance;
}

void Logger::write(LogLevel l, std::string_view msg, std::initializer_list<LogField> fields) {
  std::string line;
  line.reserve(160);
  if (format_.load(std::memory_order_relaxed) == LogFormat::kJson) {
    line += "{\"ts\":\"";
    append_timestamp(line);
    line += "\",\"level\":\"";
    line += level_name(l);
    line += "\",\"msg\":\"";
    json_escape(line, msg);
    line += '"';
    for (const auto& f : fields) {
      line += ",\"";
      json_escape(line, f.key);
      line += "\":";
      append_value(line, f, true);
    }
    line += "}\n";
  } else {
    append_timestamp(line);
    line += ' ';
    line += level_name(l);
    line += ' ';
    line.append(msg);
    for (const auto& f : fields) {
      line += ' ';
      line.append(f.key);
      line += '=';
      append_value(line, f, false);
    }
    line += '\n';
  }
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(2, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a broken stderr
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace ebb
