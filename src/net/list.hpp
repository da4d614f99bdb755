// An intrusive doubly linked list: an element derives from Linked<T>, so adding and removing
// allocate nothing and take O(1). It serves the client registry, the idle pool and the admin
// connections; an element is in at most one List at a time.
#pragma once

#include <cstddef>

namespace ebb::net {

template <typename T>
class List;

template <typename T>
class Linked {
 private:
  friend class List<T>;
  T* prev_link_ = nullptr;
  T* next_link_ = nullptr;
};

template <typename T>
class List {
 public:
  void push_front(T* x) {
    node(x).prev_link_ = nullptr;
    node(x).next_link_ = head_;
    if (head_) node(head_).prev_link_ = x;
    head_ = x;
    ++size_;
  }
  bool contains(T* x) const { return node(x).prev_link_ != nullptr || head_ == x; }
  // Does nothing for an element that is not in the list.
  void remove(T* x) {
    if (!contains(x)) return;
    Linked<T>& n = node(x);
    if (n.prev_link_) node(n.prev_link_).next_link_ = n.next_link_;
    else head_ = n.next_link_;
    if (n.next_link_) node(n.next_link_).prev_link_ = n.prev_link_;
    n.prev_link_ = n.next_link_ = nullptr;
    --size_;
  }
  T* front() const { return head_; }
  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }
  // `f` may remove the element it is given (or start closing it), never the others.
  template <typename F>
  void for_each(F f) {
    for (T* x = head_; x != nullptr;) {
      T* next = node(x).next_link_;
      f(x);
      x = next;
    }
  }

 private:
  static Linked<T>& node(T* x) { return *static_cast<Linked<T>*>(x); }
  T* head_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ebb::net
