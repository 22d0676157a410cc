// base::RecordState — the one state machine of every registry row that
// stands for something made outside the database: thinpool's thin devices,
// the layer store's layers and the graph drivers' per-layer records. A row
// is written `creating` before the thing is made, `ready` once it is whole,
// `removing` before it is taken apart, and goes when nothing is left; a row
// found `creating` or `removing` after a crash is what recovery finishes or
// undoes.
//
// The SQL spelling of a state (the registries' `state` columns, each with a
// CHECK on these three words) is RecordStateName's.
#ifndef DMTHIN_BASE_RECORD_STATE_H_
#define DMTHIN_BASE_RECORD_STATE_H_

#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base {

enum class RecordState { kCreating, kReady, kRemoving };

// "creating", "ready", "removing".
const char* RecordStateName(RecordState state);
// The state spelled `name`; nullopt for any other text.
std::optional<RecordState> ParseRecordState(absl::string_view name);
// A state read back from a registry: any other text is DataLoss (the
// registry holds what this build did not write), naming `what` and `id`
// (e.g. "driver record of layer", "abc"; the message is made only then).
absl::StatusOr<RecordState> RecordStateFromRegistry(absl::string_view name, absl::string_view what,
                                                    absl::string_view id = "");

}  // namespace base
DMTHIN_API_END

#endif  // DMTHIN_BASE_RECORD_STATE_H_
