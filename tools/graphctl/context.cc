// graphctl's context: the store opened on first use, and the parsing of the
// arguments verbs share (labels, label edits, filters), all checked before
// the store is opened.
#include "tools/graphctl/context.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/utf8.h"
#include "graph/driver.h"
#include "tools/common/storage_opts.h"

namespace graphctl {

Context& Ctx() {
  static Context context;
  return context;
}

absl::StatusOr<std::map<std::string, std::string>> Context::StorageOptions() const {
  return cli::ParseStorageOptions(storage_opts);
}

absl::StatusOr<graph::LayerStore*> Context::Store() {
  if (!store_) {
    ASSIGN_OR_RETURN(auto options, StorageOptions());
    auto opened = graph::OpenLayerStore(root, driver, options);
    if (!opened.ok()) {
      std::string hint;
      if (graph::GetUnsupported(opened.status()).has_value()) {
        hint = " ('graphctl status' lists what each driver needs)";
      } else if (opened.status().code() == absl::StatusCode::kInvalidArgument && !storage_opts.empty()) {
        // The driver refused an option: say which ones were given.
        hint = absl::StrCat(" with --storage-opt ", absl::StrJoin(storage_opts, " --storage-opt "));
      }
      return base::Annotate(opened.status(), absl::StrCat("opening layer store ", root, hint));
    }
    store_ = std::move(*opened);
  }
  return store_.get();
}

namespace {

// KEY=VALUE split at the first '='; a usage error without '=' or with an
// empty key (`what` names the argument in the message).
absl::StatusOr<std::pair<std::string, std::string>> KeyValue(const std::string& word, absl::string_view what) {
  if (word.find('=') == std::string::npos) {
    return cli::UsageError(absl::StrCat(what, ", got '", base::EscapeForText(word), "'"));
  }
  std::pair<std::string, std::string> kv = absl::StrSplit(word, absl::MaxSplits('=', 1));
  if (kv.first.empty()) {
    return cli::UsageError(absl::StrCat(what, ", got '", base::EscapeForText(word), "' (empty key)"));
  }
  return kv;
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> LabelOptions(const cli::Args& args) {
  std::map<std::string, std::string> labels;
  for (const std::string& word : args.get_all("label")) {
    ASSIGN_OR_RETURN(auto kv, KeyValue(word, "--label wants KEY=VALUE"));
    if (!labels.emplace(kv).second) {
      return cli::UsageError(absl::StrCat("--label ", base::EscapeForText(kv.first), " given twice"));
    }
  }
  RETURN_IF_ERROR(graph::ValidateLabels(labels));
  return labels;
}

absl::StatusOr<LabelEdit> ParseLabelEdit(const std::vector<std::string>& words) {
  LabelEdit edit;
  std::map<std::string, std::string> all;  // what is checked: cleared keys with ""
  for (const std::string& word : words) {
    ASSIGN_OR_RETURN(auto kv, KeyValue(word, "labels are KEY=VALUE (set) or KEY= (clear)"));
    if (!all.emplace(kv).second) {
      return cli::UsageError(absl::StrCat("label ", base::EscapeForText(kv.first), " given twice"));
    }
    edit.field_paths.push_back(absl::StrCat("labels.", kv.first));
    if (!kv.second.empty()) edit.set.emplace(std::move(kv));
  }
  RETURN_IF_ERROR(graph::ValidateLabels(all));
  return edit;
}

absl::StatusOr<graph::Filter> FilterOptions(const cli::Args& args) {
  absl::StatusOr<graph::Filter> filter = graph::Filter::ParseAll(args.get_all("filter"));
  if (!filter.ok()) return cli::UsageError(absl::StrCat("--filter: ", filter.status().message()));
  return filter;
}

}  // namespace graphctl
