// base::RecordState: the creating/ready/removing states and their spelling.
#include "base/record_state.h"

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace base {

const char* RecordStateName(RecordState state) {
  switch (state) {
    case RecordState::kCreating: return "creating";
    case RecordState::kReady: return "ready";
    case RecordState::kRemoving: return "removing";
  }
  return "?";
}

std::optional<RecordState> ParseRecordState(absl::string_view name) {
  if (name == "creating") return RecordState::kCreating;
  if (name == "ready") return RecordState::kReady;
  if (name == "removing") return RecordState::kRemoving;
  return std::nullopt;
}

absl::StatusOr<RecordState> RecordStateFromRegistry(absl::string_view name, absl::string_view what,
                                                    absl::string_view id) {
  std::optional<RecordState> state = ParseRecordState(name);
  if (!state) {
    return absl::DataLossError(absl::StrCat("registry: ", what, id.empty() ? "" : " ", id, " has unknown state \"",
                                            absl::CHexEscape(name), "\""));
  }
  return *state;
}

}  // namespace base
