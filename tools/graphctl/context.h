// What every graphctl verb shares: the global options, the store opened on
// first use, the parsing of label and filter arguments, and the output
// helpers of layers.
#ifndef DMTHIN_TOOLS_GRAPHCTL_CONTEXT_H_
#define DMTHIN_TOOLS_GRAPHCTL_CONTEXT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "graph/filter.h"
#include "graph/store.h"
#include "tools/common/cli.h"

namespace graphctl {

class Context {
 public:
  std::string root = "/var/lib/dmthin/graph";
  std::string driver;
  // --storage-opt KEY=VALUE as given, in order; checked by StorageOptions().
  std::vector<std::string> storage_opts;

  // The driver options, or a usage error naming the malformed or repeated
  // --storage-opt.
  absl::StatusOr<std::map<std::string, std::string>> StorageOptions() const;
  // The store, opened once, with a hint when the driver is unusable or
  // refused an option.
  absl::StatusOr<graph::LayerStore*> Store();

 private:
  std::unique_ptr<graph::LayerStore> store_;
};

Context& Ctx();

void AddLayerVerbs(cli::App& app);
void AddStoreVerbs(cli::App& app);

// ---- arguments (checked before the store is opened) ----

// --label KEY=VALUE (repeatable) as a map; a usage error for a missing '=',
// an empty or repeated key; InvalidArgument for labels the store refuses
// (graph::ValidateLabels: containerd's 4096-byte limit, UTF-8).
absl::StatusOr<std::map<std::string, std::string>> LabelOptions(const cli::Args& args);

// `graphctl label`'s KEY=VALUE (set) and KEY= (clear) words as
// LayerStore::Update takes them: the labels to set and one "labels.KEY"
// field path per word.
struct LabelEdit {
  std::map<std::string, std::string> set;
  std::vector<std::string> field_paths;
};
absl::StatusOr<LabelEdit> ParseLabelEdit(const std::vector<std::string>& words);

// --filter EXPR (repeatable; any matches, as containerd's) as a filter; a
// usage error naming the expression and where it does not parse.
absl::StatusOr<graph::Filter> FilterOptions(const cli::Args& args);

// ---- output ----

// A name for text output: chain ids shortened as docker does, anything
// else escaped to one line (base::EscapeForText).
std::string Short(const std::string& name);
// RFC 3339 in UTC, seconds.
std::string Time(absl::Time t);
// Labels for text output: KEY=VALUE joined by ',', escaped; "-" for none.
std::string LabelsText(const std::map<std::string, std::string>& labels);
// The layer as JSON: every LayerInfo field, labels as an object.
cli::Json LayerJson(const graph::LayerInfo& layer);
// Prints the layer as JSON under --json, else its name.
void PrintLayer(const graph::LayerInfo& layer, const cli::Output& out);

}  // namespace graphctl

#endif  // DMTHIN_TOOLS_GRAPHCTL_CONTEXT_H_
