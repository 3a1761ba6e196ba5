// RESP2/RESP3 decoder: a state machine that keeps only a stack of element counters, one header
// line being assembled and the captured prefix of the current value.
//
//   kType ──marker──▶ kLine ──"$ ! ="──▶ kBulkBody ──▶ kBulkCrlf ──┐
//     │                 │ "* ~ > % |" push a frame; "+ - : , # ( _" done   │
//     │                 ▼                                                  ▼
//     └─(top level, no marker)─▶ kInline ─────────────────────────▶ FinishValue()
//
// Bulk bodies are skipped without buffering, so memory stays bounded by Limits::max_line,
// Limits::max_inline, max_depth frames and capture_args * capture_bytes, whatever the input.
#include "nerava/protocol/redis/decoder.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"

namespace nerava::redis {
namespace {

bool IsMarker(char c) {
  switch (c) {
    case '+':
    case '-':
    case ':':
    case '$':
    case '*':
    case '_':
    case ',':
    case '#':
    case '(':
    case '!':
    case '=':
    case '%':
    case '~':
    case '>':
    case '|':
      return true;
    default:
      return false;
  }
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Separators of inline words (Redis' sdssplitargs uses isspace()).
bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses "-1" or a non-negative decimal without sign. Values beyond int64 saturate: they are
// rejected by the limits anyway, and must not wrap into something that looks small.
bool ParseLength(std::string_view s, int64_t& out) {
  if (s == "-1") {
    out = -1;
    return true;
  }
  if (s.empty()) return false;
  int64_t v = 0;
  for (char c : s) {
    if (!IsDigit(c)) return false;
    const int d = c - '0';
    v = v > (INT64_MAX - d) / 10 ? INT64_MAX : v * 10 + d;
  }
  out = v;
  return true;
}

bool IsSignedDigits(std::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit);
}

bool IsDouble(std::string_view s) {
  if (s == "inf" || s == "-inf" || s == "+inf" || s == "nan" || s == "-nan") return true;
  if (s.empty()) return false;
  bool digit = false;
  for (char c : s) {
    if (IsDigit(c)) {
      digit = true;
    } else if (c != '+' && c != '-' && c != '.' && c != 'e' && c != 'E') {
      return false;
    }
  }
  return digit;
}

Type TypeOf(char marker) {
  switch (marker) {
    case '+':
      return Type::kSimpleString;
    case '-':
      return Type::kError;
    case ':':
      return Type::kInteger;
    case '$':
      return Type::kBulkString;
    case '*':
      return Type::kArray;
    case ',':
      return Type::kDouble;
    case '#':
      return Type::kBoolean;
    case '(':
      return Type::kBigNumber;
    case '!':
      return Type::kBlobError;
    case '=':
      return Type::kVerbatim;
    case '%':
      return Type::kMap;
    case '~':
      return Type::kSet;
    case '>':
      return Type::kPush;
    default:
      return Type::kNull;  // '_'
  }
}

// Splits an inline command the way Redis' sdssplitargs() does: words separated by blanks,
// "..." with C-like escapes (\n, \xHH, ...), '...' with only \' escaped, and a closing quote
// that must be followed by a blank or the end of the line.
template <typename OnWord>
absl::Status SplitInline(std::string_view line, OnWord on_word) {
  const auto unbalanced = [] { return absl::InvalidArgumentError("unbalanced quotes in request"); };
  size_t i = 0;
  const size_t n = line.size();
  std::string word;
  for (;;) {
    while (i < n && IsBlank(line[i])) ++i;
    if (i == n) return absl::OkStatus();
    word.clear();
    bool in_double = false;
    bool in_single = false;
    bool done = false;
    while (!done) {
      if (in_double) {
        if (i == n) return unbalanced();
        const char c = line[i];
        if (c == '\\' && i + 3 < n && line[i + 1] == 'x' && HexValue(line[i + 2]) >= 0 &&
            HexValue(line[i + 3]) >= 0) {
          word.push_back(static_cast<char>(HexValue(line[i + 2]) * 16 + HexValue(line[i + 3])));
          i += 4;
        } else if (c == '\\' && i + 1 < n) {
          char e = line[i + 1];
          switch (e) {
            case 'n':
              e = '\n';
              break;
            case 'r':
              e = '\r';
              break;
            case 't':
              e = '\t';
              break;
            case 'b':
              e = '\b';
              break;
            case 'a':
              e = '\a';
              break;
            default:
              break;
          }
          word.push_back(e);
          i += 2;
        } else if (c == '"') {
          if (i + 1 < n && !IsBlank(line[i + 1])) return unbalanced();
          ++i;
          done = true;
        } else {
          word.push_back(c);
          ++i;
        }
      } else if (in_single) {
        if (i == n) return unbalanced();
        const char c = line[i];
        if (c == '\\' && i + 1 < n && line[i + 1] == '\'') {
          word.push_back('\'');
          i += 2;
        } else if (c == '\'') {
          if (i + 1 < n && !IsBlank(line[i + 1])) return unbalanced();
          ++i;
          done = true;
        } else {
          word.push_back(c);
          ++i;
        }
      } else if (i == n || IsBlank(line[i])) {
        done = true;
      } else if (line[i] == '"') {
        in_double = true;
        ++i;
      } else if (line[i] == '\'') {
        in_single = true;
        ++i;
      } else {
        word.push_back(line[i]);
        ++i;
      }
    }
    on_word(std::string_view(word));
  }
}

}  // namespace

Decoder::Decoder(Limits limits, size_t capture_args, size_t capture_bytes)
    : limits_(limits), capture_args_(capture_args), capture_bytes_(capture_bytes) {}

void Decoder::ResetValue() {
  state_ = State::kType;
  after_attribute_ = false;
  stack_.clear();
  line_.clear();
  top_type_ = Type::kNull;
  args_.clear();
  arg_count_ = 0;
  args_truncated_ = false;
  scalar_.clear();
}

absl::Status Decoder::Fail(absl::Status status) {
  error_ = status;
  return status;
}

absl::StatusOr<bool> Decoder::TakeLine(std::string_view in, size_t& pos, size_t limit,
                                       std::string_view& line) {
  // The raw line may hold one byte more than `limit`: its '\r'.
  const size_t raw_limit = limit + 1;
  const std::string_view rest = in.substr(pos);
  const size_t lf = rest.find('\n');
  const std::string_view chunk = rest.substr(0, lf);  // all of `rest` when there is no '\n'
  if (line_.size() + chunk.size() > raw_limit) {
    return absl::ResourceExhaustedError(state_ == State::kInline ? "too big inline request"
                                                                 : "too big line");
  }
  if (lf == std::string_view::npos) {
    line_.append(chunk);
    pos = in.size();
    return false;
  }
  pos += lf + 1;
  if (line_.empty()) {
    line = chunk;  // the common case: the whole line is in this input, no copy
  } else {
    line_.append(chunk);
    line = line_;
  }
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  } else if (state_ != State::kInline) {
    // Redis accepts a bare "\n" only after inline commands.
    return absl::InvalidArgumentError("expected '\\r\\n' at end of line");
  }
  if (line.size() > limit) {
    return absl::ResourceExhaustedError(state_ == State::kInline ? "too big inline request"
                                                                 : "too big line");
  }
  return true;
}

absl::Status Decoder::StartValue(char marker) {
  top_value_ = stack_.empty();
  capture_value_ = false;
  if (stack_.size() == 1 && !stack_[0].attribute) {
    const int64_t index = arg_count_ - stack_[0].remaining;
    capture_value_ = static_cast<uint64_t>(index) < capture_args_;
  }
  if (top_value_ && marker != '|') top_type_ = TypeOf(marker);
  current_marker_ = marker;
  state_ = State::kLine;
  return absl::OkStatus();
}

void Decoder::Capture(std::string_view text) {
  if (text.size() > capture_bytes_) {
    text = text.substr(0, capture_bytes_);
    args_truncated_ = true;
  }
  args_.emplace_back(text);
}

absl::Status Decoder::OnHeaderLine(std::string_view line) {
  const char marker = current_marker_;
  switch (marker) {
    case '+':
    case '-':
    case ':':
    case ',':
    case '#':
    case '(':
    case '_': {
      if (marker == ':' && !IsSignedDigits(line)) {
        return absl::InvalidArgumentError("invalid integer");
      }
      if (marker == '(' && !IsSignedDigits(line)) {
        return absl::InvalidArgumentError("invalid big number");
      }
      if (marker == ',' && !IsDouble(line)) return absl::InvalidArgumentError("invalid double");
      if (marker == '#' && line != "t" && line != "f") {
        return absl::InvalidArgumentError("invalid boolean");
      }
      if (marker == '_' && !line.empty()) return absl::InvalidArgumentError("invalid null");
      if (top_value_) scalar_.assign(line);
      if (capture_value_ && marker == '+') Capture(line);
      return absl::OkStatus();
    }
    case '$':
    case '!':
    case '=': {
      int64_t len = 0;
      if (!ParseLength(line, len)) return absl::InvalidArgumentError("invalid bulk length");
      if (len > limits_.max_bulk) return absl::ResourceExhaustedError("invalid bulk length");
      if (len == -1) {
        if (top_value_) top_type_ = Type::kNull;
        return absl::OkStatus();
      }
      if (capture_value_ && marker == '$') {
        args_.emplace_back();
        args_.back().reserve(std::min<size_t>(static_cast<size_t>(len), capture_bytes_));
        if (static_cast<uint64_t>(len) > capture_bytes_) args_truncated_ = true;
      } else {
        capture_value_ = false;
      }
      bulk_remaining_ = len;
      crlf_seen_ = 0;
      state_ = len > 0 ? State::kBulkBody : State::kBulkCrlf;
      return absl::OkStatus();
    }
    default: {  // * ~ > % |
      int64_t count = 0;
      if (!ParseLength(line, count)) return absl::InvalidArgumentError("invalid multibulk length");
      const bool attribute = marker == '|';
      if (count == -1) {
        if (attribute) return absl::InvalidArgumentError("invalid multibulk length");
        if (top_value_) top_type_ = Type::kNull;
        return absl::OkStatus();
      }
      // Maps and attributes hold a key and a value per entry.
      const int64_t per_entry = (marker == '%' || attribute) ? 2 : 1;
      if (count > limits_.max_elements / per_entry) {
        return absl::ResourceExhaustedError("invalid multibulk length");
      }
      if (static_cast<int64_t>(stack_.size()) + 1 > limits_.max_depth) {
        return absl::ResourceExhaustedError("too deep nesting");
      }
      if (top_value_ && !attribute) arg_count_ = count * per_entry;
      if (count > 0) {
        stack_.push_back(Frame{count * per_entry, attribute});
        state_ = State::kType;
      }
      return absl::OkStatus();
    }
  }
}

absl::Status Decoder::OnInlineLine(std::string_view line) {
  top_type_ = Type::kInline;
  int64_t words = 0;
  absl::Status status = SplitInline(line, [&](std::string_view word) {
    if (static_cast<uint64_t>(words) < capture_args_) Capture(word);
    ++words;
  });
  arg_count_ = words;
  return status;
}

bool Decoder::FinishValue(bool attribute) {
  state_ = State::kType;
  for (;;) {
    if (attribute) {
      // An attribute decorates the value after it and is not an element itself.
      if (stack_.empty()) after_attribute_ = true;
      return false;
    }
    if (stack_.empty()) return true;
    Frame& frame = stack_.back();
    if (--frame.remaining > 0) return false;
    attribute = frame.attribute;
    stack_.pop_back();
  }
}

absl::StatusOr<Progress> Decoder::Feed(std::string_view in) {
  if (!error_.ok()) return error_;
  size_t pos = 0;
  bool complete = false;
  while (pos < in.size() && !complete) {
    if (!value_started_) {
      ResetValue();
      value_started_ = true;
    }
    switch (state_) {
      case State::kType: {
        const char c = in[pos];
        if (!IsMarker(c)) {
          if (!stack_.empty() || after_attribute_) {
            return Fail(absl::InvalidArgumentError("unknown type byte"));
          }
          top_type_ = Type::kInline;
          state_ = State::kInline;
          break;
        }
        ++pos;
        if (absl::Status s = StartValue(c); !s.ok()) return Fail(std::move(s));
        break;
      }
      case State::kLine:
      case State::kInline: {
        const bool is_inline = state_ == State::kInline;
        std::string_view line;
        absl::StatusOr<bool> got =
            TakeLine(in, pos, is_inline ? limits_.max_inline : limits_.max_line, line);
        if (!got.ok()) return Fail(got.status());
        if (!*got) break;
        absl::Status s = is_inline ? OnInlineLine(line) : OnHeaderLine(line);
        line_.clear();  // after the parse: `line` may point into it
        if (!s.ok()) return Fail(std::move(s));
        if (is_inline) {
          complete = FinishValue(false);
        } else if (state_ == State::kLine) {
          // A scalar, a null or an empty aggregate: the value ended with its header line.
          complete = FinishValue(current_marker_ == '|');
        }
        break;
      }
      case State::kBulkBody: {
        const size_t n = static_cast<size_t>(
            std::min<int64_t>(bulk_remaining_, static_cast<int64_t>(in.size() - pos)));
        if (capture_value_) {
          std::string& arg = args_.back();
          const size_t room = capture_bytes_ - arg.size();
          arg.append(in.substr(pos, std::min(n, room)));
        }
        pos += n;
        bulk_remaining_ -= static_cast<int64_t>(n);
        if (bulk_remaining_ == 0) state_ = State::kBulkCrlf;
        break;
      }
      case State::kBulkCrlf: {
        if (in[pos] != (crlf_seen_ == 0 ? '\r' : '\n')) {
          return Fail(absl::InvalidArgumentError("expected '\\r\\n' after bulk"));
        }
        ++pos;
        if (++crlf_seen_ == 2) complete = FinishValue(false);
        break;
      }
    }
  }
  if (complete) value_started_ = false;
  return Progress{pos, complete, top_type_};
}

}  // namespace nerava::redis
