// The framing rules of a request head that llhttp 8.1 lets through even in strict mode:
// every line ends in CRLF (no bare LF, RFC 9112 §2.2), no obs-fold (§5.2), and a request line
// of exactly three parts separated by single spaces (§3). It looks at head bytes only: it
// stops at the empty line that ends the head, so bodies are never scanned.
// It also rewrites HTTP/1.x (x > 1) to HTTP/1.1 in place, before llhttp sees it: a higher minor
// version is to be processed as the highest one implemented (RFC 9110 §2.5), and llhttp
// refuses it otherwise.
#pragma once

#include <cstddef>
#include <cstring>

namespace ebb::http {

class HeadScanner {
 public:
  void reset() { *this = HeadScanner{}; }
  bool done() const { return state_ == State::kDone; }
  size_t size() const { return size_; }  // bytes of the head scanned so far

  // Scans `len` more bytes of the stream; returns nullptr, or the reason the head is invalid.
  const char* feed(char* p, size_t len) {
    size_t i = 0;
    while (i < len && state_ != State::kDone) {
      char c = p[i];
      switch (state_) {
        case State::kStart:  // empty lines before a request line are tolerated (RFC 9112 §2.2)
          if (c == '\r') {
            state_ = State::kStartLF;
          } else if (c == '\n') {
            return "bare LF in request head";
          } else {
            state_ = State::kRequestLine;
            continue;
          }
          break;
        case State::kStartLF:
          if (c != '\n') return "CR without LF in request head";
          state_ = State::kStart;
          break;
        case State::kRequestLine:
          if (c == ' ') {
            if (prev_space_) return "more than one space between request-line parts";
            prev_space_ = true;
            if (++spaces_ > 2) return "too many spaces in request line";
          } else if (c == '\r') {
            if (prev_space_ || spaces_ != 2) return "malformed request line";
            state_ = State::kLineLF;
          } else if (c == '\n') {
            return "bare LF in request head";
          } else {
            prev_space_ = false;
            if (spaces_ == 2 && version_len_ < sizeof version_) {
              if (version_len_ == 7 && std::memcmp(version_, "HTTP/1.", 7) == 0 && c > '1' && c <= '9') {
                p[i] = c = '1';
              }
              version_[version_len_++] = c;
            }
          }
          break;
        case State::kLineLF:
          if (c != '\n') return "CR without LF in request head";
          state_ = State::kLineStart;
          break;
        case State::kLineStart:
          if (c == ' ' || c == '\t') return "obsolete line folding (obs-fold) in header";
          if (c == '\n') return "bare LF in request head";
          if (c == '\r') {
            state_ = State::kEndLF;
            break;
          }
          state_ = State::kField;
          continue;
        case State::kField: {
          // Skip to the end of the line; the only question is what precedes its LF.
          const void* lf = std::memchr(p + i, '\n', len - i);
          if (lf == nullptr) {
            prev_cr_ = p[len - 1] == '\r';
            size_ += len;
            return nullptr;
          }
          size_t at = static_cast<size_t>(static_cast<const char*>(lf) - p);
          bool cr = at > i ? p[at - 1] == '\r' : prev_cr_;
          if (!cr) return "bare LF in request head";
          state_ = State::kLineStart;
          i = at + 1;
          continue;
        }
        case State::kEndLF:
          if (c != '\n') return "CR without LF in request head";
          state_ = State::kDone;
          break;
        case State::kDone:
          break;
      }
      ++i;
    }
    size_ += i;
    return nullptr;
  }

 private:
  enum class State { kStart, kStartLF, kRequestLine, kLineLF, kLineStart, kField, kEndLF, kDone };
  State state_ = State::kStart;
  size_t size_ = 0;
  unsigned spaces_ = 0;
  char version_[8] = {0};
  unsigned version_len_ = 0;
  bool prev_space_ = false;
  bool prev_cr_ = false;
};

}  // namespace ebb::http
