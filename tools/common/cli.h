// A small declarative command-line layer shared by the dmthin tools: verbs
// with positional arguments and options, generated --help, aligned tables,
// JSON output, and the exit-code convention (0 ok, 1 failed, 2 usage).
// Tools parse and print here; what they do lives in the libraries.
#ifndef DMTHIN_TOOLS_COMMON_CLI_H_
#define DMTHIN_TOOLS_COMMON_CLI_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

using Json = nlohmann::ordered_json;

struct Option {
  std::string name;        // "data-size" (used as --data-size)
  std::string value_name;  // "SIZE"; empty for a flag
  std::string help;
  bool repeatable = false;
};

// What a handler gets: positional values in order, option values by name.
class Args {
 public:
  const std::string& positional(size_t i) const { return positionals_.at(i); }
  size_t positional_count() const { return positionals_.size(); }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> get(const std::string& name) const;
  std::vector<std::string> get_all(const std::string& name) const;
  // Parsed helpers; InvalidArgument names the option.
  absl::StatusOr<std::optional<uint64_t>> size(const std::string& name) const;
  absl::StatusOr<std::optional<uint64_t>> number(const std::string& name) const;
  absl::StatusOr<std::optional<double>> percent(const std::string& name) const;

 private:
  friend class App;
  std::vector<std::string> positionals_;
  std::multimap<std::string, std::string> values_;
};

// Where output goes, and how.
struct Output {
  bool json = false;
  int verbosity = 0;
  bool tty = false;  // stdout is a terminal (progress and colour allowed)
};

// A usage error: printed with the verb's usage line, exit 2.
absl::Status UsageError(const std::string& message);
bool IsUsageError(const absl::Status& status);

struct Verb {
  std::string path;                      // "pool create"
  std::vector<std::string> positionals;  // "NAME"; "[NAME]" optional; "CMD..." rest
  std::vector<Option> options;
  std::string summary;                   // one line for the verb list
  std::string help;                      // paragraphs + examples for VERB --help
  std::function<absl::Status(const Args&, const Output&)> run;
};

struct GlobalOption {
  Option option;
  std::function<void(const std::string& value)> apply;
};

class App {
 public:
  // Every App has the global options --json and -v (Output::json,
  // Output::verbosity).
  App(std::string name, std::string description);
  void AddGlobal(GlobalOption option) { globals_.push_back(std::move(option)); }
  void AddVerb(Verb verb) { verbs_.push_back(std::move(verb)); }
  // Parses argv, runs the verb, prints errors; returns the exit code.
  int Main(int argc, char** argv);

  std::string Help() const;
  std::string VerbHelp(const Verb& verb) const;

 private:
  std::string Usage(const Verb& verb) const;
  std::string name_, description_;
  std::vector<GlobalOption> globals_;
  std::vector<Verb> verbs_;
  Output output_;
};

// An aligned text table; numbers right-aligned when `right` is set.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::set<size_t> right = {})
      : header_(std::move(header)), right_(std::move(right)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> header_;
  std::set<size_t> right_;
  std::vector<std::vector<std::string>> rows_;
};

// "12.5%" of used/total; "-" when total is 0.
std::string Percent(uint64_t used, uint64_t total);
// "1.20 GiB / 10.0 GiB (12.0%)"
std::string UsedOfTotal(uint64_t used, uint64_t total);

// Prints `doc` as JSON (pretty, one document) to stdout.
// Pretty-printed, on stdout. Bytes that are not UTF-8 are replaced by
// U+FFFD (never an abort).
void PrintJson(const Json& doc);

// A progress line on stderr when it is a terminal; silent otherwise (and
// under --json). Shows "what ..." from the start; Update shows a bar for
// work whose fraction is known.
class Progress {
 public:
  Progress(const Output& out, std::string what);
  ~Progress();
  void Update(double fraction, const std::string& detail = "");
  void Done();

 private:
  bool enabled_;
  std::string what_;
  bool finished_ = false;
};

}  // namespace cli

#endif  // DMTHIN_TOOLS_COMMON_CLI_H_
