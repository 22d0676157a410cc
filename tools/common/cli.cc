#include "tools/common/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/size.h"

namespace cli {
namespace {

constexpr absl::string_view kUsagePayload = "dmthin.usage";

bool IsOptionToken(const std::string& s) { return s.size() > 1 && s[0] == '-'; }

// Splits "--name=value" into name and value.
std::pair<std::string, std::optional<std::string>> SplitOption(const std::string& token) {
  std::string body = token.substr(token.rfind('-', 1) == 1 ? 2 : 1);
  auto eq = body.find('=');
  if (eq == std::string::npos) return {body, std::nullopt};
  return {body.substr(0, eq), body.substr(eq + 1)};
}

std::vector<std::string> Words(const std::string& path) {
  return absl::StrSplit(path, ' ', absl::SkipEmpty());
}

}  // namespace

std::optional<std::string> Args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Args::get_all(const std::string& name) const {
  std::vector<std::string> out;
  auto [b, e] = values_.equal_range(name);
  for (auto it = b; it != e; ++it) out.push_back(it->second);
  return out;
}

absl::StatusOr<std::optional<uint64_t>> Args::size(const std::string& name) const {
  auto v = get(name);
  if (!v) return std::optional<uint64_t>();
  auto bytes = base::ParseSize(*v);
  if (!bytes.ok()) return UsageError(absl::StrCat("--", name, ": ", bytes.status().message()));
  return std::optional<uint64_t>(*bytes);
}

absl::StatusOr<std::optional<uint64_t>> Args::number(const std::string& name) const {
  auto v = get(name);
  if (!v) return std::optional<uint64_t>();
  uint64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n) || (*v)[0] == '-' || (*v)[0] == '+')
    return UsageError(absl::StrCat("--", name, ": '", *v, "' is not a whole number"));
  return std::optional<uint64_t>(n);
}

absl::StatusOr<std::optional<double>> Args::percent(const std::string& name) const {
  auto v = get(name);
  if (!v) return std::optional<double>();
  std::string s = *v;
  if (!s.empty() && s.back() == '%') s.pop_back();
  double d = 0;
  if (!absl::SimpleAtod(s, &d) || !(d > 0) || d > 1000)
    return UsageError(absl::StrCat("--", name, ": '", *v, "' is not a percentage (e.g. 80 or 80%)"));
  return std::optional<double>(d);
}

absl::Status UsageError(const std::string& message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kUsagePayload, absl::Cord("1"));
  return s;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

App::App(std::string name, std::string description)
    : name_(std::move(name)), description_(std::move(description)) {
  globals_.push_back({{"json", "", "print JSON instead of text"},
                      [this](const std::string&) { output_.json = true; }});
  globals_.push_back({{"v", "", "more detail (repeatable)"},
                      [this](const std::string&) { ++output_.verbosity; }});
}

std::string App::Usage(const Verb& verb) const {
  std::string u = absl::StrCat(name_, " ", verb.path);
  for (const auto& p : verb.positionals) absl::StrAppend(&u, " ", p);
  for (const auto& o : verb.options) {
    absl::StrAppend(&u, " [--", o.name, o.value_name.empty() ? "" : " " + o.value_name, "]");
  }
  return u;
}

std::string App::VerbHelp(const Verb& verb) const {
  std::string h = absl::StrCat("usage: ", Usage(verb), "\n\n", verb.summary, "\n");
  if (!verb.help.empty()) absl::StrAppend(&h, "\n", verb.help, "\n");
  if (!verb.options.empty()) {
    absl::StrAppend(&h, "\noptions:\n");
    for (const auto& o : verb.options) {
      std::string left = absl::StrCat("  --", o.name, o.value_name.empty() ? "" : " " + o.value_name);
      if (left.size() < 28) left.resize(28, ' '); else left += "\n" + std::string(28, ' ');
      absl::StrAppend(&h, left, o.help, "\n");
    }
  }
  absl::StrAppend(&h, "\nglobal options:\n");
  for (const auto& g : globals_) {
    std::string left = absl::StrCat("  ", g.option.name.size() == 1 ? "-" : "--", g.option.name,
                                    g.option.value_name.empty() ? "" : " " + g.option.value_name);
    if (left.size() < 28) left.resize(28, ' ');
    absl::StrAppend(&h, left, g.option.help, "\n");
  }
  return h;
}

std::string App::Help() const {
  std::string h = absl::StrCat("usage: ", name_, " [global options] VERB [ARGS] [--help]\n\n",
                               description_, "\n\nverbs:\n");
  for (const auto& v : verbs_) {
    std::string left = "  " + v.path;
    if (left.size() < 24) left.resize(24, ' '); else left += "  ";
    absl::StrAppend(&h, left, v.summary, "\n");
  }
  absl::StrAppend(&h, "\nglobal options:\n");
  for (const auto& g : globals_) {
    std::string left = absl::StrCat("  ", g.option.name.size() == 1 ? "-" : "--", g.option.name,
                                    g.option.value_name.empty() ? "" : " " + g.option.value_name);
    if (left.size() < 24) left.resize(24, ' ');
    absl::StrAppend(&h, left, g.option.help, "\n");
  }
  absl::StrAppend(&h, "\n'", name_, " VERB --help' describes a verb. Exit status: 0 success, ",
                  "1 the operation failed, 2 usage error.\n");
  return h;
}

int App::Main(int argc, char** argv) {
  std::vector<std::string> tokens(argv + 1, argv + argc);
  output_.tty = isatty(STDOUT_FILENO);

  // Global options may stand anywhere before "--".
  std::vector<std::string> rest;
  bool want_help = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t == "--") {
      rest.insert(rest.end(), tokens.begin() + i, tokens.end());
      break;
    }
    if (t == "-h" || t == "--help") {
      want_help = true;
      continue;
    }
    bool matched = false;
    if (IsOptionToken(t)) {
      auto [name, value] = SplitOption(t);
      for (auto& g : globals_) {
        if (g.option.name != name) continue;
        if (!g.option.value_name.empty() && !value) {
          if (i + 1 >= tokens.size()) {
            std::cerr << name_ << ": --" << name << " needs a value\n";
            return kExitUsage;
          }
          value = tokens[++i];
        }
        g.apply(value.value_or(""));
        matched = true;
        break;
      }
    }
    if (!matched) rest.push_back(t);
  }
  if (rest.empty() || rest[0] == "help") {
    std::cout << Help();
    return rest.empty() && !want_help ? kExitUsage : kExitOk;
  }

  // The verb: the longest path matching the leading words.
  const Verb* verb = nullptr;
  size_t verb_words = 0;
  for (const auto& v : verbs_) {
    auto words = Words(v.path);
    if (words.size() > rest.size() || words.size() <= verb_words) continue;
    if (std::equal(words.begin(), words.end(), rest.begin())) {
      verb = &v;
      verb_words = words.size();
    }
  }
  if (!verb) {
    std::vector<std::string> group;
    for (const auto& v : verbs_)
      if (Words(v.path)[0] == rest[0]) group.push_back(v.path);
    std::cerr << name_ << ": unknown verb '" << rest[0]
              << (rest.size() > 1 && !group.empty() ? " " + rest[1] : "") << "'";
    if (!group.empty()) std::cerr << "; did you mean one of: " << absl::StrJoin(group, ", ");
    std::cerr << "\n(see '" << name_ << " --help')\n";
    return kExitUsage;
  }
  if (want_help) {
    std::cout << VerbHelp(*verb);
    return kExitOk;
  }

  Args args;
  bool options_done = false;
  for (size_t i = verb_words; i < rest.size(); ++i) {
    const std::string& t = rest[i];
    if (!options_done && t == "--") {
      options_done = true;
      continue;
    }
    if (!options_done && IsOptionToken(t)) {
      auto [name, value] = SplitOption(t);
      auto it = std::find_if(verb->options.begin(), verb->options.end(),
                             [&wanted = name](const Option& o) { return o.name == wanted; });
      if (it == verb->options.end()) {
        std::cerr << name_ << " " << verb->path << ": unknown option '" << t << "'\nusage: "
                  << Usage(*verb) << "\n";
        return kExitUsage;
      }
      if (it->value_name.empty()) {
        if (value) {
          std::cerr << name_ << " " << verb->path << ": --" << name << " takes no value\n";
          return kExitUsage;
        }
        value = "";
      } else if (!value) {
        if (i + 1 >= rest.size()) {
          std::cerr << name_ << " " << verb->path << ": --" << name << " needs " << it->value_name
                    << "\nusage: " << Usage(*verb) << "\n";
          return kExitUsage;
        }
        value = rest[++i];
      }
      if (!it->repeatable && args.has(name)) {
        std::cerr << name_ << " " << verb->path << ": --" << name << " given twice\n";
        return kExitUsage;
      }
      args.values_.emplace(name, *value);
      continue;
    }
    args.positionals_.push_back(t);
  }
  size_t required = 0, optional = 0;
  bool variadic = false;
  for (const auto& p : verb->positionals) {
    if (absl::EndsWith(p, "...")) variadic = true;
    else if (p.front() == '[') ++optional;
    else ++required;
  }
  if (args.positionals_.size() < required ||
      (!variadic && args.positionals_.size() > required + optional)) {
    std::cerr << name_ << " " << verb->path << ": expected "
              << (args.positionals_.size() < required ? "" : "at most ")
              << (args.positionals_.size() < required ? required : required + optional)
              << " argument(s) (" << absl::StrJoin(verb->positionals, " ") << "), got "
              << args.positionals_.size() << "\nusage: " << Usage(*verb) << "\n";
    return kExitUsage;
  }

  absl::Status status = verb->run(args, output_);
  if (status.ok()) return kExitOk;
  if (IsUsageError(status)) {
    std::cerr << name_ << " " << verb->path << ": " << status.message() << "\nusage: " << Usage(*verb)
              << "\n";
    return kExitUsage;
  }
  std::cerr << name_ << " " << verb->path << ": " << status.message() << "\n";
  return kExitFailed;
}

std::string Table::Render() const {
  std::vector<size_t> width(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  };
  measure(header_);
  for (const auto& r : rows_) measure(r);
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < width.size(); ++i) {
      std::string cell = i < row.size() ? row[i] : "";
      std::string pad(width[i] - std::min(width[i], cell.size()), ' ');
      if (i) line += "  ";
      line += right_.count(i) ? pad + cell : (i + 1 == width.size() ? cell : cell + pad);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(header_);
  for (const auto& r : rows_) emit(r);
  return out;
}

std::string Percent(uint64_t used, uint64_t total) {
  if (total == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(used) / total);
  return buf;
}

std::string UsedOfTotal(uint64_t used, uint64_t total) {
  return absl::StrCat(base::FormatSize(used), " / ", base::FormatSize(total), " (",
                      Percent(used, total), ")");
}

void PrintJson(const Json& doc) {
  // Bytes that are not UTF-8 (a file name from inside a layer, a record
  // from an older store) become U+FFFD instead of aborting the program.
  std::cout << doc.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

Progress::Progress(const Output& out, std::string what)
    : enabled_(!out.json && isatty(STDERR_FILENO)), what_(std::move(what)) {
  if (enabled_) {
    std::fprintf(stderr, "%s ...", what_.c_str());
    std::fflush(stderr);
  }
}

Progress::~Progress() { Done(); }

void Progress::Update(double fraction, const std::string& detail) {
  if (!enabled_ || finished_) return;
  int pct = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * 100);
  int bar = pct / 5;
  std::fprintf(stderr, "\r%s [%-20s] %3d%% %s\033[K", what_.c_str(), std::string(bar, '#').c_str(),
               pct, detail.c_str());
  std::fflush(stderr);
}

void Progress::Done() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

}  // namespace cli
