// ClassificationCache: an LRU over exact statement text; one per worker, no locks (see header).
#include <utility>

#include "nerava/routing/sql_classifier.h"
#include "routing/literal_shape.h"

namespace nerava::routing {

ClassificationCache::ClassificationCache(size_t max_entries, size_t max_bytes,
                                         size_t max_statement_bytes)
    : max_entries_(max_entries == 0 ? 1 : max_entries),
      max_bytes_(max_bytes),
      max_statement_bytes_(max_statement_bytes) {}

std::shared_ptr<const StatementClass> ClassificationCache::Find(std::string_view key) {
  auto found = map_.find(absl::string_view(key.data(), key.size()));
  if (found == map_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, found->second);  // most recently used first; no reallocation
  return found->second->value;
}

void ClassificationCache::Insert(std::string_view key,
                                 std::shared_ptr<const StatementClass> value) {
  if (key.size() > max_statement_bytes_ || key.size() > max_bytes_) return;
  while (!lru_.empty() && (map_.size() >= max_entries_ || bytes_ + key.size() > max_bytes_)) {
    const Entry& victim = lru_.back();
    bytes_ -= victim.text.size();
    map_.erase(absl::string_view(victim.text.data(), victim.text.size()));
    lru_.pop_back();
  }
  lru_.push_front(Entry{std::string(key), std::move(value)});
  const std::string& text = lru_.front().text;
  map_.emplace(absl::string_view(text.data(), text.size()), lru_.begin());
  bytes_ += text.size();
}

std::shared_ptr<const StatementClass> ClassificationCache::Classify(std::string_view sql) {
  // Statements that differ only in literal values share their shape's entry, unless what was
  // learnt depends on the literals (SET text to replay, a directive's value).
  const std::optional<std::string> shape =
      sql.size() <= max_statement_bytes_ ? LiteralShape(sql) : std::nullopt;
  if (shape) {
    if (auto value = Find(*shape)) {
      ++hits_;
      return value;
    }
  }
  if (auto value = Find(sql)) {
    ++hits_;
    return value;
  }
  ++misses_;
  auto value = std::make_shared<const StatementClass>(routing::Classify(sql));
  const bool literal_free = value->session_effects.empty() && !value->route_directive;
  Insert(shape && literal_free ? std::string_view(*shape) : sql, value);
  return value;
}

void ClassificationCache::Clear() {
  map_.clear();
  lru_.clear();
  bytes_ = 0;
}

}  // namespace nerava::routing
