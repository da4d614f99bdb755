// Writes to one client gathered while one read from its app is handled, so that a response
// head, its body and the chunk framing leave in one writev.
//
// Ownership rule: one connection at a time corks the batch (around the handling of one read
// from its app) and the batch is flushed when it uncorks, or earlier when full. A piece is
// either a view, valid until that flush (the loop's read buffer, static strings), or transient
// (a head built in a reused buffer, a chunk line on the stack): transient bytes are copied into
// the batch's own storage at once, so the writer may reuse its buffer on return. Nothing else
// may point into the batch, so no caller ever needs to flush by hand to keep a buffer alive.
#pragma once

#include <uv.h>

#include <cstddef>
#include <string>

namespace ebb {

class OutBatch {
 public:
  static constexpr unsigned kMax = 16;

  void cork(const void* owner) { owner_ = owner; }
  void uncork() { owner_ = nullptr; }
  bool corked_by(const void* owner) const { return owner_ == owner; }
  bool empty() const { return n_ == 0; }
  // Adds `n` pieces; bit i of `transient` says bufs[i] must be copied. False when they do not
  // fit: flush, then add again.
  bool add(const uv_buf_t* bufs, unsigned n, unsigned transient) {
    if (n_ + n > kMax) return false;
    for (unsigned i = 0; i < n; ++i) {
      Piece& p = pieces_[n_++];
      p.len = bufs[i].len;
      if ((transient >> i) & 1u) {
        p.base = nullptr;
        p.offset = copies_.size();
        copies_.append(bufs[i].base, bufs[i].len);
      } else {
        p.base = bufs[i].base;
      }
    }
    return true;
  }
  // Hands the pieces to `write` as one array, then empties the batch.
  template <typename Write>
  void flush(Write write) {
    if (n_ == 0) return;
    uv_buf_t bufs[kMax];
    for (unsigned i = 0; i < n_; ++i) {
      char* base = pieces_[i].base != nullptr ? pieces_[i].base : copies_.data() + pieces_[i].offset;
      bufs[i] = uv_buf_init(base, static_cast<unsigned>(pieces_[i].len));
    }
    unsigned n = n_;
    n_ = 0;
    write(bufs, n);  // net::write copies what the kernel does not take at once
    copies_.clear();
  }
  void discard() {
    n_ = 0;
    copies_.clear();
  }

 private:
  struct Piece {
    char* base;     // null: `offset` into copies_
    size_t offset;
    size_t len;
  };
  const void* owner_ = nullptr;
  Piece pieces_[kMax];
  unsigned n_ = 0;
  std::string copies_;
};

}  // namespace ebb
