#include "proxy/worker_pool.h"

#include <spdlog/spdlog.h>

namespace nerava::proxy {

WorkerPool::WorkerPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) {
    // Concurrency hint 1: each context is run by exactly one thread, so Asio can skip locking.
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    guards_.push_back(asio::make_work_guard(*contexts_.back()));
  }
  for (auto& context : contexts_) {
    threads_.emplace_back([&io = *context] {
      for (;;) {
        try {
          io.run();
          return;
        } catch (const std::exception& e) {
          // A session must never take the worker down with it.
          spdlog::error("worker: unexpected exception: {}", e.what());
        }
      }
    });
  }
}

WorkerPool::~WorkerPool() { Stop(); }

asio::io_context& WorkerPool::Next() {
  return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
}

void WorkerPool::Stop() {
  guards_.clear();
  for (auto& context : contexts_) context->stop();
  threads_.clear();  // joins
}

}  // namespace nerava::proxy
