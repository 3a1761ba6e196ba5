#include "nerava_bench/runner.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <memory>
#include <thread>

namespace nerava::bench {
namespace {

using std::chrono::duration_cast;
using std::chrono::nanoseconds;

Clock::duration Seconds(double s) {
  return duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// What one thread measures in one round.
struct ThreadRound {
  std::vector<std::unique_ptr<Connection>> connections;
  double rate = 0;              // this thread's share of the open-loop rate
  Clock::duration offset{};     // staggers the threads' open-loop schedules
  LatencyHistogram latency;
  uint64_t ops = 0;
  uint64_t errors = 0;
  uint64_t timeouts = 0;
  uint64_t stale = 0;
  std::string first_error;
  std::atomic<uint64_t> progress{0};

  void Fail(std::string message) {
    if (first_error.empty()) first_error = std::move(message);
  }
};

struct Window {
  Clock::time_point start;          // sending begins (warm-up)
  Clock::time_point measure_start;
  Clock::time_point measure_end;    // sending stops
  Clock::time_point drain_end;
  bool Contains(Clock::time_point t) const { return t >= measure_start && t < measure_end; }
};

void RunThread(ThreadRound& t, const RunOptions& options, const Window& window) {
  const bool open_loop = options.rate > 0;
  const auto interval =
      open_loop ? duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / t.rate))
                : Clock::duration{};
  int64_t next_index = 0;
  std::deque<Clock::time_point> backlog;  // open loop: due ops no connection could take yet
  std::vector<bool> alive(t.connections.size(), true);
  std::vector<Completion> done;
  std::vector<pollfd> fds;
  std::vector<size_t> fd_owner;

  auto record = [&](const Completion& c, Clock::time_point now) {
    if (!window.Contains(c.start)) return;
    if (!c.ok) {
      ++t.errors;
      return;
    }
    ++t.ops;
    if (c.stale) ++t.stale;
    t.latency.Record(duration_cast<nanoseconds>(now - c.start).count());
  };
  auto kill = [&](size_t i, const absl::Status& status) {
    alive[i] = false;
    t.Fail(std::string(status.message()));
    for (Clock::time_point s : t.connections[i]->pending_starts()) {
      if (window.Contains(s)) ++t.errors;
    }
  };

  while (true) {
    Clock::time_point now = Clock::now();
    const bool sending = now < window.measure_end;
    if (std::none_of(alive.begin(), alive.end(), [](bool a) { return a; })) break;

    if (sending && open_loop) {
      for (;;) {
        const Clock::time_point due = window.start + t.offset + interval * next_index;
        if (due > now || due >= window.measure_end) break;
        backlog.push_back(due);
        ++next_index;
      }
      while (!backlog.empty()) {
        size_t best = t.connections.size();
        for (size_t i = 0; i < t.connections.size(); ++i) {
          if (alive[i] && (best == t.connections.size() ||
                           t.connections[i]->in_flight() < t.connections[best]->in_flight())) {
            best = i;
          }
        }
        if (best == t.connections.size() ||
            t.connections[best]->in_flight() >= static_cast<size_t>(options.max_in_flight)) {
          break;
        }
        if (absl::Status s = t.connections[best]->Send(backlog.front()); !s.ok()) {
          kill(best, s);
          continue;
        }
        backlog.pop_front();
      }
    } else if (sending) {
      for (size_t i = 0; i < t.connections.size(); ++i) {
        while (alive[i] && t.connections[i]->in_flight() < static_cast<size_t>(options.depth)) {
          if (absl::Status s = t.connections[i]->Send(now); !s.ok()) kill(i, s);
        }
      }
    } else {
      bool idle = backlog.empty();
      for (size_t i = 0; i < t.connections.size(); ++i) {
        if (alive[i] && t.connections[i]->in_flight() > 0) idle = false;
      }
      if (idle) break;
      if (now >= window.drain_end) {
        // Unanswered at the end: recorded with the latency they have at least, so a stall
        // shows in the tail instead of vanishing.
        auto timeout = [&](Clock::time_point s) {
          if (!window.Contains(s)) return;
          ++t.timeouts;
          t.latency.Record(duration_cast<nanoseconds>(now - s).count());
        };
        for (Clock::time_point s : backlog) timeout(s);
        for (size_t i = 0; i < t.connections.size(); ++i) {
          if (!alive[i]) continue;
          for (Clock::time_point s : t.connections[i]->pending_starts()) timeout(s);
        }
        break;
      }
    }

    fds.clear();
    fd_owner.clear();
    for (size_t i = 0; i < t.connections.size(); ++i) {
      if (!alive[i]) continue;
      absl::StatusOr<bool> more = t.connections[i]->Flush();
      if (!more.ok()) {
        kill(i, more.status());
        continue;
      }
      const auto events = static_cast<short>(POLLIN | (*more ? POLLOUT : 0));
      fds.push_back({t.connections[i]->fd(), events, 0});
      fd_owner.push_back(i);
    }
    if (fds.empty()) break;

    Clock::time_point wake = now + std::chrono::milliseconds(50);
    if (sending) wake = std::min(wake, window.measure_end);
    if (sending && open_loop) {
      wake = std::min(wake, window.start + t.offset + interval * next_index);
    }
    if (!sending) wake = std::min(wake, window.drain_end);
    const auto wait_ns = std::max<int64_t>(0, duration_cast<nanoseconds>(wake - now).count());
    timespec ts{static_cast<time_t>(wait_ns / 1000000000), static_cast<long>(wait_ns % 1000000000)};
    if (ppoll(fds.data(), fds.size(), &ts, nullptr) < 0) continue;  // EINTR

    for (size_t k = 0; k < fds.size(); ++k) {
      if ((fds[k].revents & (POLLIN | POLLERR | POLLHUP)) == 0) continue;
      const size_t i = fd_owner[k];
      done.clear();
      absl::Status s = t.connections[i]->Read(done);
      now = Clock::now();
      for (const Completion& c : done) record(c, now);
      if (!t.connections[i]->first_error().empty()) t.Fail(t.connections[i]->first_error());
      if (!s.ok()) kill(i, s);
    }
    t.progress.store(t.ops, std::memory_order_relaxed);
  }
  t.progress.store(t.ops, std::memory_order_relaxed);
}

// Connects, runs one round against one target and merges into `result`.
void RunRound(const RunOptions& options, const Target& target, int round,
              TargetResult& result) {
  const int threads = std::max(1, std::min(options.threads, options.connections));
  std::vector<std::unique_ptr<ThreadRound>> per_thread;
  for (int i = 0; i < threads; ++i) per_thread.push_back(std::make_unique<ThreadRound>());
  for (int c = 0; c < options.connections; ++c) {
    const uint64_t seed = (static_cast<uint64_t>(round) << 32) ^ static_cast<uint64_t>(c) * 7919;
    absl::StatusOr<std::unique_ptr<Connection>> conn =
        IsPostgres(options.workload.workload) ? ConnectPg(target.url, options.workload, seed)
                                              : ConnectRedis(target.url, options.workload, seed);
    if (!conn.ok()) {
      ++result.errors;
      if (result.first_error.empty()) result.first_error = std::string(conn.status().message());
      continue;
    }
    per_thread[static_cast<size_t>(c % threads)]->connections.push_back(std::move(*conn));
  }
  for (int i = 0; i < threads; ++i) {
    per_thread[static_cast<size_t>(i)]->rate = options.rate / threads;
    if (options.rate > 0) per_thread[static_cast<size_t>(i)]->offset = Seconds(i / options.rate);
  }

  Window window;
  window.start = Clock::now() + std::chrono::milliseconds(10);
  window.measure_start = window.start + Seconds(options.warmup_seconds);
  window.measure_end = window.measure_start + Seconds(options.duration_seconds);
  window.drain_end = window.measure_end + Seconds(options.drain_seconds);

  std::vector<std::thread> workers;
  for (auto& t : per_thread) {
    if (t->connections.empty()) continue;
    workers.emplace_back([&options, &window, tr = t.get()] {
      std::this_thread::sleep_until(window.start);
      RunThread(*tr, options, window);
    });
  }

  // Progress on stderr, one line rewritten in place on a terminal.
  const bool tty = isatty(STDERR_FILENO) != 0;
  const double total = options.warmup_seconds + options.duration_seconds;
  std::atomic<bool> finished{false};
  std::thread progress([&] {
    while (!finished.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 500 : 100));
      if (!options.progress || !tty || finished.load()) continue;
      uint64_t ops = 0;
      for (auto& t : per_thread) ops += t->progress.load(std::memory_order_relaxed);
      const double elapsed =
          std::chrono::duration<double>(Clock::now() - window.start).count();
      std::fprintf(stderr, "\r  round %d/%d  %-14s %5.1f/%.1f s  %10llu ops measured   ", round + 1,
                   options.rounds, target.name.c_str(), std::min(elapsed, total), total,
                   static_cast<unsigned long long>(ops));
    }
  });
  for (std::thread& w : workers) w.join();
  finished.store(true);
  progress.join();

  RoundResult r;
  r.seconds = options.duration_seconds;
  for (auto& t : per_thread) {
    result.latency.Merge(t->latency);
    r.ops += t->ops;
    result.errors += t->errors;
    result.timeouts += t->timeouts;
    result.stale += t->stale;
    if (result.first_error.empty() && !t->first_error.empty()) {
      result.first_error = t->first_error;
    }
  }
  r.ops_per_second = static_cast<double>(r.ops) / r.seconds;
  result.rounds.push_back(r);
  if (options.progress) {
    std::fprintf(stderr, "%s  round %d/%d  %-14s %10.0f ops/s  errors %llu%s\n", tty ? "\r" : "",
                 round + 1, options.rounds, target.name.c_str(), r.ops_per_second,
                 static_cast<unsigned long long>(result.errors), tty ? "                    " : "");
  }
}

}  // namespace

double TargetResult::median_ops_per_second() const {
  if (rounds.empty()) return 0;
  std::vector<double> v;
  for (const RoundResult& r : rounds) v.push_back(r.ops_per_second);
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double PlannedSeconds(const RunOptions& options) {
  return options.rounds * static_cast<double>(options.targets.size()) *
         (options.warmup_seconds + options.duration_seconds);
}

absl::StatusOr<std::vector<TargetResult>> Run(const RunOptions& options) {
  if (options.targets.empty()) return absl::InvalidArgumentError("no --target given");
  // Worst case also waits out every drain.
  const double worst = PlannedSeconds(options) + options.rounds *
                                                     static_cast<double>(options.targets.size()) *
                                                     options.drain_seconds;
  if (worst > options.max_seconds) {
    return absl::InvalidArgumentError("planned run of " + std::to_string(worst) +
                                      " s exceeds --max-seconds");
  }
  std::vector<TargetResult> results;
  for (const Target& t : options.targets) {
    results.emplace_back();
    results.back().target = t;
  }
  for (int round = 0; round < options.rounds; ++round) {
    for (size_t i = 0; i < options.targets.size(); ++i) {
      RunRound(options, options.targets[i], round, results[i]);
    }
  }
  return results;
}

}  // namespace nerava::bench
