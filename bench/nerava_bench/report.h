// Results as a markdown table (stdout), JSON (--json) and an SVG percentile plot (--svg).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nerava_bench/runner.h"

namespace nerava::bench {

// Quantiles reported everywhere (the plot draws the whole curve).
inline constexpr double kQuantiles[] = {0.5, 0.9, 0.99, 0.999};

// Index into `results` of the target named `baseline` (the first when empty); -1 if unknown.
int BaselineIndex(const std::vector<TargetResult>& results, const std::string& baseline);

std::string MarkdownTable(const std::vector<TargetResult>& results, int baseline);
std::string Json(const RunOptions& options, const std::vector<TargetResult>& results,
                 int baseline);
std::string Svg(const RunOptions& options, const std::vector<TargetResult>& results);

// Hides the password of a URL (user:secret@ → user:***@) before it is printed or saved.
std::string RedactUrl(const std::string& url);

absl::Status WriteFile(const std::string& path, const std::string& contents);

}  // namespace nerava::bench
