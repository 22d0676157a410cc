// containerd filter expressions (graph/filter.h): a hand-written scanner and
// recursive-descent parser over bytes; regexps compiled once with RE2 (linear
// time, the syntax of Go's regexp).
#include "graph/filter.h"

#include <re2/re2.h>

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"

namespace graph {

Filter::Filter() = default;
Filter::~Filter() = default;
Filter::Filter(const Filter&) = default;
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(const Filter&) = default;
Filter& Filter::operator=(Filter&&) noexcept = default;

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool IsFieldChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool IsControl(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}
bool IsValueChar(char c) {
  return !IsSpace(c) && !IsControl(c) && c != ',' && c != '|' && c != '"';
}
int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// "..." with every byte that is not plain printable ASCII escaped.
std::string Quote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u >= 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xf]);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace

class Filter::Parser {
 public:
  explicit Parser(absl::string_view in) : in_(in) {}

  absl::Status Parse(Filter& f) {
    for (;;) {
      std::vector<Selector> group;
      for (;;) {
        Selector sel;
        RETURN_IF_ERROR(ParseSelector(sel));
        group.push_back(std::move(sel));
        SkipSpace();
        if (!AtEnd() && in_[pos_] == ',') {
          ++pos_;
          continue;
        }
        break;
      }
      f.groups_.push_back(std::move(group));
      if (AtEnd()) return absl::OkStatus();
      if (in_[pos_] == '|') {
        ++pos_;
        continue;
      }
      return Error("unexpected input, want \",\", \"|\" or the end");
    }
  }

 private:
  bool AtEnd() const { return pos_ >= in_.size(); }
  void SkipSpace() {
    while (!AtEnd() && IsSpace(in_[pos_])) ++pos_;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("filter ", Quote(in_.substr(0, 200)), in_.size() > 200 ? "..." : "",
                     ": at byte ", pos_, ": ", what));
  }

  absl::Status ParseSelector(Selector& sel) {
    RETURN_IF_ERROR(ParseField(sel.path));
    for (;;) {
      SkipSpace();
      if (AtEnd() || in_[pos_] != '.') break;
      ++pos_;
      RETURN_IF_ERROR(ParseField(sel.path));
    }
    SkipSpace();
    if (AtEnd() || in_[pos_] == ',' || in_[pos_] == '|') {
      sel.op = Op::kPresent;
      return absl::OkStatus();
    }
    size_t start = pos_;
    while (!AtEnd() && (in_[pos_] == '=' || in_[pos_] == '!' || in_[pos_] == '~')) ++pos_;
    absl::string_view op = in_.substr(start, pos_ - start);
    if (op == "==") {
      sel.op = Op::kEqual;
    } else if (op == "!=") {
      sel.op = Op::kNotEqual;
    } else if (op == "~=") {
      sel.op = Op::kMatches;
    } else {
      pos_ = start;
      return Error("want an operator (\"==\", \"!=\", \"~=\"), \",\", \"|\" or the end");
    }
    SkipSpace();
    if (AtEnd()) return Error("want a value");
    char c = in_[pos_];
    if (c == '"') {
      RETURN_IF_ERROR(ParseQuoted(sel.value));
    } else if (c == '/' && sel.op == Op::kMatches) {
      RETURN_IF_ERROR(ParseSlashQuoted(sel.value));
    } else if (IsValueChar(c)) {
      start = pos_;
      while (!AtEnd() && IsValueChar(in_[pos_])) ++pos_;
      sel.value = std::string(in_.substr(start, pos_ - start));
    } else {
      return Error("want a value");
    }
    if (sel.op == Op::kMatches) {
      RE2::Options options;
      options.set_log_errors(false);
      auto re = std::make_shared<const RE2>(sel.value, options);
      if (!re->ok()) return Error(absl::StrCat("bad regexp: ", re->error()));
      sel.re = std::move(re);
    }
    return absl::OkStatus();
  }

  absl::Status ParseField(std::vector<std::string>& path) {
    SkipSpace();
    if (AtEnd()) return Error("want a field name");
    if (in_[pos_] == '"') {
      std::string f;
      RETURN_IF_ERROR(ParseQuoted(f));
      path.push_back(std::move(f));
      return absl::OkStatus();
    }
    size_t start = pos_;
    while (!AtEnd() && IsFieldChar(in_[pos_])) ++pos_;
    if (pos_ == start) return Error("want a field name ([A-Za-z0-9_]+ or \"quoted\")");
    path.emplace_back(in_.substr(start, pos_ - start));
    return absl::OkStatus();
  }

  // At '"': Go's interpreted string literal.
  absl::Status ParseQuoted(std::string& out) {
    ++pos_;
    for (;;) {
      if (AtEnd()) return Error("quoted string not terminated");
      char c = in_[pos_];
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c == '\n' || c == '\0') return Error("quoted string not terminated");
      if (c != '\\') {
        out.push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (AtEnd()) return Error("quoted string not terminated");
      char e = in_[pos_++];
      switch (e) {
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case '\\': out.push_back('\\'); break;
        case '"': out.push_back('"'); break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (int i = 0; i < 2; ++i) {
            if (AtEnd() || in_[pos_] < '0' || in_[pos_] > '7') return Error("bad octal escape");
            v = v * 8 + static_cast<uint32_t>(in_[pos_++] - '0');
          }
          if (v > 255) return Error("octal escape above \\377");
          out.push_back(static_cast<char>(v));
          break;
        }
        case 'x': case 'u': case 'U': {
          int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t v = 0;
          for (int i = 0; i < n; ++i) {
            int h = AtEnd() ? -1 : HexVal(in_[pos_]);
            if (h < 0) return Error("bad hex escape");
            v = v * 16 + static_cast<uint32_t>(h);
            ++pos_;
          }
          if (e == 'x') {
            out.push_back(static_cast<char>(v));
          } else if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) {
            return Error("escape is not a Unicode code point");
          } else {
            AppendUtf8(out, v);
          }
          break;
        }
        default:
          return Error("unknown escape");
      }
    }
  }

  // At '/': a regexp; "\/" is a slash, any other backslash stays.
  absl::Status ParseSlashQuoted(std::string& out) {
    ++pos_;
    for (;;) {
      if (AtEnd()) return Error("regexp not terminated (want /.../)");
      char c = in_[pos_++];
      if (c == '/') return absl::OkStatus();
      if (c == '\n' || c == '\0') return Error("regexp not terminated (want /.../)");
      if (c == '\\' && !AtEnd() && in_[pos_] == '/') {
        out.push_back('/');
        ++pos_;
        continue;
      }
      out.push_back(c);
      if (c == '\\' && !AtEnd()) out.push_back(in_[pos_++]);
    }
  }

  absl::string_view in_;
  size_t pos_ = 0;
};

absl::StatusOr<Filter> Filter::Parse(absl::string_view expr) {
  Filter f;
  bool blank = true;
  for (char c : expr) blank = blank && IsSpace(c);
  if (blank) return f;
  Parser p(expr);
  if (absl::Status s = p.Parse(f); !s.ok()) return s;
  return f;
}

absl::StatusOr<Filter> Filter::ParseAll(const std::vector<std::string>& exprs) {
  Filter all;
  for (const std::string& e : exprs) {
    absl::StatusOr<Filter> f = Parse(e);
    if (!f.ok()) return f.status();
    if (f->MatchesEverything()) return Filter();
    for (auto& g : f->groups_) all.groups_.push_back(std::move(g));
  }
  return all;
}

bool Filter::Match(FieldLookup lookup) const {
  if (groups_.empty()) return true;
  for (const std::vector<Selector>& group : groups_) {
    bool all = true;
    for (const Selector& sel : group) {
      std::optional<absl::string_view> v = lookup(sel.path);
      bool ok = false;
      switch (sel.op) {
        case Op::kPresent: ok = v.has_value(); break;
        case Op::kEqual: ok = v.has_value() && *v == sel.value; break;
        case Op::kNotEqual: ok = !v.has_value() || *v != sel.value; break;
        case Op::kMatches:
          ok = RE2::PartialMatch(re2::StringPiece(v ? v->data() : "", v ? v->size() : 0), *sel.re);
          break;
      }
      if (!ok) {
        all = false;
        break;
      }
    }
    if (all) return true;
  }
  return false;
}

std::string Filter::ToString() const {
  std::vector<std::string> groups;
  for (const std::vector<Selector>& group : groups_) {
    std::vector<std::string> sels;
    for (const Selector& sel : group) {
      std::string s;
      for (size_t i = 0; i < sel.path.size(); ++i) {
        if (i > 0) s.push_back('.');
        const std::string& f = sel.path[i];
        bool bare = !f.empty();
        for (char c : f) bare = bare && IsFieldChar(c);
        s += bare ? f : Quote(f);
      }
      switch (sel.op) {
        case Op::kPresent: break;
        case Op::kEqual: absl::StrAppend(&s, "==", Quote(sel.value)); break;
        case Op::kNotEqual: absl::StrAppend(&s, "!=", Quote(sel.value)); break;
        case Op::kMatches: absl::StrAppend(&s, "~=", Quote(sel.value)); break;
      }
      sels.push_back(std::move(s));
    }
    groups.push_back(absl::StrJoin(sels, ","));
  }
  return absl::StrJoin(groups, "|");
}

}  // namespace graph
