// Test support: one layer store operation in a forked child that an armed
// failpoint (base/failpoint.h) ends — the store crash tests' child, shared
// by the host drivers' (graph_metadata_test) and devicemapper's
// (graph_devmapper_test), and the repair-then-check they end with.
#ifndef DMTHIN_TESTS_SUPPORT_STORE_CRASH_H_
#define DMTHIN_TESTS_SUPPORT_STORE_CRASH_H_

#include <map>
#include <string>

#include "graph/store.h"
#include "gtest/gtest.h"

namespace testsupport {

enum class StoreOp { kCreate, kCommit, kRemove, kImport, kUnmount, kRemoveBusy };

// Forks a child that sets DMTHIN_FAILPOINT=`failpoint`, opens the layer
// store at `root` with `driver` and `options`, and does `op`: Create("ctr2",
// `base`, with an init layer), Commit("snap", "ctr"), Remove("ctr"),
// Import of a one-file tar, Mount("ctr") then Unmount("ctr") and 3 s for
// the driver's threads (kUnmount),
// or, with "ctr"'s filesystem held open by the child (its mount detached
// by the Unmount), Remove("ctr") (kRemoveBusy: devicemapper defers the
// thin's deletion). Returns the child's exit status
// (kFailpointExit: it died at the failpoint; 0: it finished; 2: the open
// failed; 3: the operation failed), -1 if it did not exit.
int RunStoreOpUntilFailpoint(const std::string& root, const std::string& driver,
                             const std::map<std::string, std::string>& options, const std::string& failpoint,
                             StoreOp op, const std::string& base);

// A check's findings and repairs, for a failure message.
std::string CheckReportText(const graph::CheckReport& report);

// What every crash test asks after the crash: `check --repair`, then a
// check that finds nothing (the failure names both reports, or the error).
::testing::AssertionResult RepairLeavesStoreClean(graph::LayerStore& store);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_STORE_CRASH_H_
