#include "nerava_bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"

namespace nerava::bench {
namespace {

double Micros(int64_t nanos) { return static_cast<double>(nanos) / 1000.0; }

std::string Fixed(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, value);
  return buf;
}

// Latencies: 3 significant digits are plenty, and the table stays narrow.
std::string Us(int64_t nanos) {
  const double us = Micros(nanos);
  return Fixed(us, us < 10 ? 2 : (us < 100 ? 1 : 0));
}

std::string Ratio(double value, double base) {
  return base > 0 ? Fixed(value / base, 2) : "–";
}

std::string QuantileName(double q) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "p%g", q * 100);
  return buf;
}

std::string EscapeXml(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// 1, 2, 5 × 10^k at or above `value`: axis ends a person can read.
double NiceCeil(double value) {
  if (value <= 0) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(value)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= value) return m * p;
  }
  return 10 * p;
}

}  // namespace

int BaselineIndex(const std::vector<TargetResult>& results, const std::string& baseline) {
  if (baseline.empty()) return results.empty() ? -1 : 0;
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].target.name == baseline) return static_cast<int>(i);
  }
  return -1;
}

std::string RedactUrl(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t at = url.rfind('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return url;
  const size_t colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

std::string MarkdownTable(const std::vector<TargetResult>& results, int baseline) {
  const TargetResult* base = baseline >= 0 ? &results[static_cast<size_t>(baseline)] : nullptr;
  std::ostringstream out;
  out << "| target | ops/s | ×base | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | p50 ×base "
         "| p99 ×base | errors |\n";
  out << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const TargetResult& r : results) {
    const LatencyHistogram& h = r.latency;
    out << "| " << r.target.name << (base == &r ? " (base)" : "") << " | "
        << Fixed(r.median_ops_per_second(), 0) << " | "
        << (base ? Ratio(r.median_ops_per_second(), base->median_ops_per_second()) : "–");
    for (double q : kQuantiles) out << " | " << Us(h.ValueAt(q));
    out << " | " << Us(h.max()) << " | "
        << (base ? Ratio(static_cast<double>(h.ValueAt(0.5)),
                         static_cast<double>(base->latency.ValueAt(0.5)))
                 : "–")
        << " | "
        << (base ? Ratio(static_cast<double>(h.ValueAt(0.99)),
                         static_cast<double>(base->latency.ValueAt(0.99)))
                 : "–")
        << " | " << r.errors + r.timeouts;
    if (r.stale > 0) out << " (" << r.stale << " stale)";
    out << " |\n";
  }
  return out.str();
}

std::string Json(const RunOptions& options, const std::vector<TargetResult>& results,
                 int baseline) {
  using nlohmann::json;
  json doc;
  doc["workload"] = WorkloadName(options.workload.workload);
  doc["mode"] = options.rate > 0 ? "open" : "closed";
  doc["rate"] = options.rate;
  doc["connections"] = options.connections;
  doc["threads"] = options.threads;
  doc["depth"] = options.depth;
  doc["rounds"] = options.rounds;
  doc["warmup_seconds"] = options.warmup_seconds;
  doc["duration_seconds"] = options.duration_seconds;
  doc["pg_prepared"] = options.workload.pg_prepared;
  doc["baseline"] = baseline >= 0 ? json(results[static_cast<size_t>(baseline)].target.name)
                                  : json(nullptr);
  const TargetResult* base = baseline >= 0 ? &results[static_cast<size_t>(baseline)] : nullptr;
  json targets = json::array();
  for (const TargetResult& r : results) {
    json t;
    t["name"] = r.target.name;
    t["url"] = RedactUrl(r.target.url);
    t["ops_per_second"] = r.median_ops_per_second();
    json rounds = json::array();
    for (const RoundResult& round : r.rounds) {
      rounds.push_back({{"ops", round.ops}, {"ops_per_second", round.ops_per_second}});
    }
    t["rounds"] = rounds;
    json latency;
    for (double q : kQuantiles) latency[QuantileName(q)] = Micros(r.latency.ValueAt(q));
    latency["max"] = Micros(r.latency.max());
    latency["mean"] = r.latency.mean() / 1000.0;
    latency["count"] = r.latency.count();
    t["latency_us"] = latency;
    t["errors"] = r.errors;
    t["timeouts"] = r.timeouts;
    t["stale_reads"] = r.stale;
    if (!r.first_error.empty()) t["first_error"] = r.first_error;
    if (base != nullptr && base->median_ops_per_second() > 0) {
      t["ratio_to_baseline"] = {
          {"ops_per_second", r.median_ops_per_second() / base->median_ops_per_second()},
          {"p50", static_cast<double>(r.latency.ValueAt(0.5)) /
                      std::max<double>(1, static_cast<double>(base->latency.ValueAt(0.5)))},
          {"p99", static_cast<double>(r.latency.ValueAt(0.99)) /
                      std::max<double>(1, static_cast<double>(base->latency.ValueAt(0.99)))},
      };
    }
    targets.push_back(t);
  }
  doc["targets"] = targets;
  return doc.dump(2) + "\n";
}

// A percentile plot in the HdrHistogram manner: x is log10(1 / (1 - q)), so 90 %, 99 %,
// 99.9 % sit at equal distances and the tail gets most of the width; y is latency, log scale.
std::string Svg(const RunOptions& options, const std::vector<TargetResult>& results) {
  constexpr double kWidth = 900, kHeight = 520;
  constexpr double kLeft = 90, kRight = 30, kTop = 50, kBottom = 60;
  constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;
  constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                     "#9467bd", "#8c564b", "#e377c2", "#17becf"};

  // The rightmost quantile every curve can honestly show: 1 − 1/count, at most 99.99 %.
  uint64_t min_count = UINT64_MAX;
  for (const TargetResult& r : results) {
    if (r.latency.count() > 0) min_count = std::min(min_count, r.latency.count());
  }
  double x_max = 4;  // 99.99 %
  if (min_count != UINT64_MAX) x_max = std::clamp(std::log10(static_cast<double>(min_count)), 1.0, 4.0);
  const double q_max = 1 - std::pow(10.0, -x_max);
  // Latency on a log axis: one slow target must not flatten everybody else's curve.
  double y_lo = 1e18, y_hi = 0;
  for (const TargetResult& r : results) {
    if (r.latency.count() == 0) continue;
    y_lo = std::min(y_lo, std::max(1.0, Micros(r.latency.ValueAt(0))));
    y_hi = std::max(y_hi, Micros(r.latency.ValueAt(q_max)));
  }
  if (y_hi <= 0) {
    y_lo = 1;
    y_hi = 10;
  }
  y_lo = std::pow(10.0, std::floor(std::log10(y_lo)));
  y_hi = std::max(NiceCeil(y_hi * 1.05), y_lo * 10);
  const double log_lo = std::log10(y_lo), log_span = std::log10(y_hi) - log_lo;

  auto px = [&](double x) { return kLeft + x / x_max * kPlotW; };
  auto py = [&](double us) {
    const double l = std::log10(std::clamp(us, y_lo, y_hi));
    return kTop + kPlotH - (l - log_lo) / log_span * kPlotH;
  };
  auto label = [](double us) {
    return us >= 1000 ? Fixed(us / 1000, us < 10000 && std::fmod(us, 1000) != 0 ? 1 : 0) + " ms"
                      : Fixed(us, 0) + " µs";
  };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\""
      << kHeight << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::string title = std::string(WorkloadName(options.workload.workload)) + ", " +
                      std::to_string(options.connections) + " connections, " +
                      (options.rate > 0 ? "open loop " + Fixed(options.rate, 0) + " ops/s"
                                        : "closed loop, depth " + std::to_string(options.depth)) +
                      ", " + std::to_string(options.rounds) + " rounds";
  svg << "<text x=\"" << kWidth / 2 << "\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">"
      << "Latency by percentile: " << EscapeXml(title) << "</text>\n";

  // Grid and axes.
  for (double decade = y_lo; decade < y_hi * 1.001; decade *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double us = decade * m;
      if (us > y_hi * 1.001) break;
      const double y = py(us);
      svg << "<line x1=\"" << kLeft << "\" y1=\"" << y << "\" x2=\"" << kLeft + kPlotW
          << "\" y2=\"" << y << "\" stroke=\"" << (m == 1.0 ? "#bbb" : "#e5e5e5") << "\"/>\n";
      svg << "<text x=\"" << kLeft - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
          << label(us) << "</text>\n";
    }
  }
  const char* labels[] = {"0%", "90%", "99%", "99.9%", "99.99%"};
  for (int i = 0; i <= static_cast<int>(x_max); ++i) {
    const double x = px(i);
    svg << "<line x1=\"" << x << "\" y1=\"" << kTop << "\" x2=\"" << x << "\" y2=\""
        << kTop + kPlotH << "\" stroke=\"#ddd\"/>\n";
    svg << "<text x=\"" << x << "\" y=\"" << kTop + kPlotH + 18 << "\" text-anchor=\"middle\">"
        << labels[i] << "</text>\n";
  }
  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kPlotW
      << "\" height=\"" << kPlotH << "\" fill=\"none\" stroke=\"#333\"/>\n";
  svg << "<text x=\"" << kLeft + kPlotW / 2 << "\" y=\"" << kHeight - 15
      << "\" text-anchor=\"middle\">percentile (log scale of 1/(1−q))</text>\n";
  svg << "<text transform=\"translate(20," << kTop + kPlotH / 2
      << ") rotate(-90)\" text-anchor=\"middle\">latency (log scale)</text>\n";

  // Curves and legend.
  for (size_t t = 0; t < results.size(); ++t) {
    const TargetResult& r = results[t];
    const char* color = kColors[t % std::size(kColors)];
    if (r.latency.count() > 0) {
      svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
      constexpr int kPoints = 240;
      for (int i = 0; i <= kPoints; ++i) {
        const double x = x_max * i / kPoints;
        const double q = 1 - std::pow(10.0, -x);
        svg << Fixed(px(x), 1) << "," << Fixed(py(Micros(r.latency.ValueAt(q))), 1) << " ";
      }
      svg << "\"/>\n";
    }
    const double ly = kTop + 18 + 18 * static_cast<double>(t);
    svg << "<line x1=\"" << kLeft + 12 << "\" y1=\"" << ly - 4 << "\" x2=\"" << kLeft + 36
        << "\" y2=\"" << ly - 4 << "\" stroke=\"" << color << "\" stroke-width=\"3\"/>\n";
    svg << "<text x=\"" << kLeft + 42 << "\" y=\"" << ly << "\">" << EscapeXml(r.target.name)
        << ": p50 " << Us(r.latency.ValueAt(0.5)) << " µs, p99 " << Us(r.latency.ValueAt(0.99))
        << " µs, " << Fixed(r.median_ops_per_second(), 0) << " ops/s</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace nerava::bench
