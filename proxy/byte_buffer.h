// A read buffer: bytes arrive at the back, are consumed at the front, and are compacted only when
// space runs out, so a frame can be handed on as a view without copying it.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "proxy/asio.h"

namespace nerava::proxy {

class ByteBuffer {
 public:
  explicit ByteBuffer(size_t initial_capacity = 16 * 1024) : data_(initial_capacity) {}

  // The unconsumed bytes.
  std::string_view data() const { return {data_.data() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }

  // Free space for at least `min_free` more bytes (compacting or growing as needed).
  asio::mutable_buffer Prepare(size_t min_free) {
    if (data_.size() - end_ < min_free) {
      if (begin_ > 0) {
        std::copy(data_.begin() + begin_, data_.begin() + end_, data_.begin());
        end_ -= begin_;
        begin_ = 0;
      }
      if (data_.size() - end_ < min_free) data_.resize(end_ + min_free);
    }
    return asio::buffer(data_.data() + end_, data_.size() - end_);
  }
  void Commit(size_t n) { end_ += n; }
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Gives memory back after a large message passed through.
  void ShrinkTo(size_t capacity) {
    if (data_.size() > capacity && size() <= capacity) {
      std::vector<char> smaller(capacity);
      std::copy(data_.begin() + begin_, data_.begin() + end_, smaller.begin());
      end_ -= begin_;
      begin_ = 0;
      data_.swap(smaller);
    }
  }

 private:
  std::vector<char> data_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace nerava::proxy
