// graph::Filter — containerd's filter expressions, for walking layers.
//
// A filter is a list of selectors on field paths, the syntax of containerd's
// `filters` package (what `ctr snapshots ls --filter` and the Snapshots
// API's Walk send):
//
//   filters   := group ("|" group)*            any group matches (OR)
//   group     := selector ("," selector)*      every selector matches (AND)
//   selector  := fieldpath [operator value]    no operator: the field is present
//   fieldpath := field ("." field)*
//   field     := [A-Za-z0-9_]+ | quoted
//   operator  := "==" | "!=" | "~="            "~=": RE2 regexp, unanchored
//   value     := quoted | /regexp/ (after ~=) | [^ \t\n,|"]+
//   quoted    := "..." with Go's escapes (\n \t \\ \" \xhh \ooo \uhhhh \Uhhhhhhhh)
//
// Whitespace between tokens is ignored; "" matches everything. Examples:
//   name==foo                       kind==committed,labels."a.b"==c
//   labels."containerd.io/gc.root"  parent~=/^sha256:/|kind==view
//
// Differences from containerd (which accepts less or means the same):
// containerd 1.6 ORs only whole strings (Walk's repeated filters,
// Filter::ParseAll here), and also takes `|...|` as a regexp quote; here `|`
// between groups is OR, so a value holding `|`, `,` or spaces is quoted.
// Inside /regexp/ a backslash escapes `/` and is otherwise kept for the
// regexp (containerd rejects `\d` there). A regexp that does not compile is
// InvalidArgument at parse time (containerd logs it and matches nothing).
// `!=` on an absent field matches (as in containerd).
#ifndef DMTHIN_GRAPH_FILTER_H_
#define DMTHIN_GRAPH_FILTER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace re2 {
class RE2;
}

namespace graph {

// Looks up a field path (e.g. {"labels", "a.b"} for labels."a.b"): the
// field's value, or nullopt when the object has no such field.
using FieldLookup =
    absl::FunctionRef<std::optional<absl::string_view>(const std::vector<std::string>& path)>;

class Filter {
 public:
  // Matches everything.
  Filter();
  ~Filter();
  Filter(const Filter&);
  Filter(Filter&&) noexcept;
  Filter& operator=(const Filter&);
  Filter& operator=(Filter&&) noexcept;

  // Parses one expression. InvalidArgument with the byte offset on error.
  static absl::StatusOr<Filter> Parse(absl::string_view expr);
  // Any of `exprs` matches (containerd's ParseAll); none = everything. An
  // empty string among them matches everything.
  static absl::StatusOr<Filter> ParseAll(const std::vector<std::string>& exprs);

  bool Match(FieldLookup lookup) const;
  bool MatchesEverything() const { return groups_.empty(); }

  // Canonical text: parses back to an equal filter (fields bare where they
  // can be, values quoted, no spaces). "" for everything.
  std::string ToString() const;

 private:
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  struct Selector {
    std::vector<std::string> path;
    Op op = Op::kPresent;
    std::string value;
    std::shared_ptr<const re2::RE2> re;  // kMatches
  };
  class Parser;

  std::vector<std::vector<Selector>> groups_;  // OR of ANDs; empty = all
};

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_FILTER_H_
