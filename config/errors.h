// Collects every config problem as "FILE: KEY: problem" so a person fixes the file once.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "config/text.h"

namespace nerava::config::internal {

class ErrorList {
 public:
  explicit ErrorList(std::string_view source) : source_(source) {}

  // One problem per key: once a key (or anything under it) is reported, later complaints about
  // it are consequences (an unset ${VAR} leaves the value empty, which "required" would repeat).
  void Add(std::string_view key, std::string_view problem) {
    for (const std::string& seen : keys_) {
      if (seen.size() < key.size() || !std::string_view(seen).starts_with(key)) continue;
      if (seen.size() == key.size() || seen[key.size()] == '.' || seen[key.size()] == '[') return;
    }
    keys_.emplace_back(key);
    lines_.push_back(Cat(source_, ": ", key, ": ", problem));
  }
  bool empty() const { return lines_.empty(); }
  const std::string& source() const { return source_; }
  absl::Status ToStatus() const {
    if (lines_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(JoinStrings(lines_, "\n"));
  }

 private:
  std::string source_;
  std::vector<std::string> keys_;
  std::vector<std::string> lines_;
};

}  // namespace nerava::config::internal
