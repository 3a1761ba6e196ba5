// ClassificationCache: an LRU over exact statement text; one per worker, no locks (see header).
#include <utility>

#include "nerava/routing/sql_classifier.h"

namespace nerava::routing {

ClassificationCache::ClassificationCache(size_t max_entries, size_t max_bytes,
                                         size_t max_statement_bytes)
    : max_entries_(max_entries == 0 ? 1 : max_entries),
      max_bytes_(max_bytes),
      max_statement_bytes_(max_statement_bytes) {}

std::shared_ptr<const StatementClass> ClassificationCache::Classify(std::string_view sql) {
  auto found = map_.find(absl::string_view(sql.data(), sql.size()));
  if (found != map_.end()) {
    ++hits_;
    lru_.splice(lru_.begin(), lru_, found->second);  // most recently used first; no reallocation
    return found->second->value;
  }
  ++misses_;
  auto value = std::make_shared<const StatementClass>(routing::Classify(sql));
  if (sql.size() > max_statement_bytes_ || sql.size() > max_bytes_) return value;

  while (!lru_.empty() && (map_.size() >= max_entries_ || bytes_ + sql.size() > max_bytes_)) {
    const Entry& victim = lru_.back();
    bytes_ -= victim.text.size();
    map_.erase(absl::string_view(victim.text.data(), victim.text.size()));
    lru_.pop_back();
  }
  lru_.push_front(Entry{std::string(sql), value});
  const std::string& key = lru_.front().text;
  map_.emplace(absl::string_view(key.data(), key.size()), lru_.begin());
  bytes_ += key.size();
  return value;
}

void ClassificationCache::Clear() {
  map_.clear();
  lru_.clear();
  bytes_ = 0;
}

}  // namespace nerava::routing
