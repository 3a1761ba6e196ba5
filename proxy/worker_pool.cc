#include "proxy/worker_pool.h"

#include <sched.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <string>

namespace nerava::proxy {
namespace {

// The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a sidecar
// with `limits.cpu: 1` on a 32-core node gets one worker, not 32 threads that get throttled).
int AvailableCores() {
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = std::max(1, CPU_COUNT(&set));
  std::ifstream cpu_max("/sys/fs/cgroup/cpu.max");  // "max 100000" or "150000 100000"
  std::string quota;
  long long period = 0;
  long long limit = 0;
  if (cpu_max >> quota >> period && period > 0 &&
      std::from_chars(quota.data(), quota.data() + quota.size(), limit).ec == std::errc() &&
      limit > 0) {
    cores = std::min<int>(cores, static_cast<int>((limit + period - 1) / period));
  }
  return std::max(1, cores);
}

}  // namespace

WorkerPool::WorkerPool(int threads) {
  if (threads <= 0) threads = AvailableCores();
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
