// Failure injection for the crash tests: with DMTHIN_FAILPOINT=<name> in the
// environment, Failpoint(name) ends the process at once with _exit(77), as a
// crash there would (no destructors, no cleanup). Each layer names its own
// points (thinpool: after_intent, ...; devmapper_*; volume_*).
#ifndef DMTHIN_BASE_FAILPOINT_H_
#define DMTHIN_BASE_FAILPOINT_H_

#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base {

// True if DMTHIN_FAILPOINT names `name`.
bool FailpointIs(absl::string_view name);
// _exit(77) if DMTHIN_FAILPOINT names `name`.
void Failpoint(absl::string_view name);

}  // namespace base
DMTHIN_API_END

#endif  // DMTHIN_BASE_FAILPOINT_H_
