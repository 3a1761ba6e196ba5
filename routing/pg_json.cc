#include "routing/pg_json.h"

#include <charconv>

namespace nerava::routing::internal {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

void SkipSpace(std::string_view s, size_t& pos) {
  while (pos < s.size() && IsSpace(s[pos])) ++pos;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool ReadHex4(std::string_view s, size_t pos, uint32_t& out) {
  if (pos + 4 > s.size()) return false;
  out = 0;
  for (size_t i = 0; i < 4; ++i) {
    int v = HexValue(s[pos + i]);
    if (v < 0) return false;
    out = out * 16 + static_cast<uint32_t>(v);
  }
  return true;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

std::string UnescapeJson(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\' || i + 1 >= raw.size()) {
      out.push_back(c);
      continue;
    }
    char e = raw[++i];
    switch (e) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        uint32_t cp = 0;
        if (!ReadHex4(raw, i + 1, cp)) return out;  // validated by Parse; defensive only
        i += 4;
        uint32_t low = 0;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < raw.size() && raw[i + 1] == '\\' &&
            raw[i + 2] == 'u' && ReadHex4(raw, i + 3, low) && low >= 0xDC00 && low < 0xE000) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          i += 6;
        }
        AppendUtf8(out, cp);
        break;
      }
      default:
        out.push_back(e);
        break;  // \" \\ \/
    }
  }
  return out;
}

bool JsonTree::ParseString(std::string_view json, size_t& pos, std::string_view& out,
                           bool& escaped) {
  // pos is at the opening quote.
  size_t start = ++pos;
  escaped = false;
  while (pos < json.size()) {
    char c = json[pos];
    if (c == '"') {
      out = json.substr(start, pos - start);
      ++pos;
      return true;
    }
    if (c == '\\') {
      escaped = true;
      if (pos + 1 >= json.size()) return false;
      char e = json[pos + 1];
      if (e == 'u') {
        uint32_t ignored = 0;
        if (!ReadHex4(json, pos + 2, ignored)) return false;
        pos += 6;
        continue;
      }
      if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' &&
          e != 't') {
        return false;
      }
      pos += 2;
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20) return false;
    ++pos;
  }
  return false;
}

bool JsonTree::Parse(std::string_view json, size_t max_depth) {
  nodes_.clear();
  // pg_query emits roughly one node per 12 bytes of JSON; reserving avoids regrowth.
  nodes_.reserve(json.size() / 12 + 4);

  struct Open {
    uint32_t node;
    uint32_t last_child;
  };
  std::vector<Open> stack;
  size_t pos = 0;
  std::string_view pending_key;

  // Links a new node under the innermost open container.
  auto add = [&](Type type) -> uint32_t {
    uint32_t index = static_cast<uint32_t>(nodes_.size());
    Node& n = nodes_.emplace_back();
    n.type = type;
    n.key = pending_key;
    pending_key = {};
    if (!stack.empty()) {
      Open& parent = stack.back();
      if (parent.last_child == kNone) {
        nodes_[parent.node].first_child = index;
      } else {
        nodes_[parent.last_child].next = index;
      }
      parent.last_child = index;
    }
    return index;
  };

  bool after_value = false;  // a value just ended: expect ',' or a closing bracket
  bool just_opened = false;  // a container just opened: it may close at once
  while (true) {
    SkipSpace(json, pos);
    if (after_value) {
      if (stack.empty()) return pos == json.size();
      if (pos >= json.size()) return false;
      if (json[pos] == ',') {
        ++pos;
        after_value = false;
        continue;
      }
      char want = nodes_[stack.back().node].type == Type::kObject ? '}' : ']';
      if (json[pos] != want) return false;
      ++pos;
      stack.pop_back();
      continue;
    }
    if (pos >= json.size()) return false;
    const bool in_object = !stack.empty() && nodes_[stack.back().node].type == Type::kObject;
    if (just_opened) {
      just_opened = false;
      if (json[pos] == (in_object ? '}' : ']')) {
        ++pos;
        stack.pop_back();
        after_value = true;
        continue;
      }
    }
    if (in_object) {  // a member: "key": value
      if (json[pos] != '"') return false;
      bool key_escaped = false;
      if (!ParseString(json, pos, pending_key, key_escaped)) return false;
      SkipSpace(json, pos);
      if (pos >= json.size() || json[pos] != ':') return false;
      ++pos;
      SkipSpace(json, pos);
      if (pos >= json.size()) return false;
    }
    char c = json[pos];
    if (c == '{' || c == '[') {
      if (stack.size() >= max_depth) return false;
      uint32_t index = add(c == '{' ? Type::kObject : Type::kArray);
      stack.push_back({index, kNone});
      ++pos;
      just_opened = true;
      continue;
    }
    if (c == '"') {
      std::string_view text;
      bool escaped = false;
      if (!ParseString(json, pos, text, escaped)) return false;
      uint32_t index = add(Type::kString);
      nodes_[index].text = text;
      nodes_[index].escaped = escaped;
    } else if (json.substr(pos, 4) == "true" || json.substr(pos, 4) == "null") {
      uint32_t index = add(c == 't' ? Type::kBool : Type::kNull);
      nodes_[index].text = json.substr(pos, 4);
      pos += 4;
    } else if (json.substr(pos, 5) == "false") {
      uint32_t index = add(Type::kBool);
      nodes_[index].text = json.substr(pos, 5);
      pos += 5;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t start = pos++;
      while (pos < json.size() &&
             (json[pos] == '.' || json[pos] == 'e' || json[pos] == 'E' || json[pos] == '+' ||
              json[pos] == '-' || (json[pos] >= '0' && json[pos] <= '9'))) {
        ++pos;
      }
      uint32_t index = add(Type::kNumber);
      nodes_[index].text = json.substr(start, pos - start);
    } else {
      return false;
    }
    after_value = true;
  }
}

uint32_t JsonTree::Get(uint32_t obj, std::string_view key) const {
  if (obj == kNone || nodes_[obj].type != Type::kObject) return kNone;
  for (uint32_t c = nodes_[obj].first_child; c != kNone; c = nodes_[c].next) {
    if (nodes_[c].key == key) return c;
  }
  return kNone;
}

size_t JsonTree::Count(uint32_t container) const {
  if (container == kNone) return 0;
  size_t n = 0;
  for (uint32_t c = nodes_[container].first_child; c != kNone; c = nodes_[c].next) ++n;
  return n;
}

int64_t JsonTree::Int(uint32_t i) const {
  if (i == kNone || nodes_[i].type != Type::kNumber) return 0;
  int64_t v = 0;
  std::string_view t = nodes_[i].text;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  return ec == std::errc() ? v : 0;
}

std::string JsonTree::String(uint32_t i) const {
  if (i == kNone || nodes_[i].type != Type::kString) return {};
  const Node& n = nodes_[i];
  return n.escaped ? UnescapeJson(n.text) : std::string(n.text);
}

}  // namespace nerava::routing::internal
