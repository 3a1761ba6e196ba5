// One io_context per worker thread (DESIGN §3): a session and its server connections live on one
// worker for their whole life, so the data path needs no locks.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "proxy/asio.h"

namespace nerava::proxy {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);  // threads <= 0: one per core
  ~WorkerPool();                     // stops and joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Round-robin choice of the worker a new session goes to.
  asio::io_context& Next();
  size_t size() const { return contexts_.size(); }
  void Stop();

 private:
  using WorkGuard = asio::executor_work_guard<asio::io_context::executor_type>;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<WorkGuard> guards_;
  std::vector<std::jthread> threads_;
  std::atomic<size_t> next_{0};
};

}  // namespace nerava::proxy
