// Test support: containerd's own snapshotter conformance suite
// (tests/containerd/snapshotter_suite_test.go, built into
// <build>/go/snapshotter-suite.test) run against dmthin-snapshotter on one
// driver, from a gtest test (host tier: overlay, vfs, btrfs; vm tier:
// devicemapper). Expects every case to pass or be skipped by the suite.
#ifndef DMTHIN_TESTS_SUPPORT_SNAPSHOTTER_SUITE_H_
#define DMTHIN_TESTS_SUPPORT_SNAPSHOTTER_SUITE_H_

#include <string>
#include <vector>

namespace testsupport {

// <build>/go/snapshotter-suite.test.
std::string SnapshotterSuiteBin();

// Runs the Go test binary with TMPDIR = `tmp` (the suite makes its roots
// there), the snapshotter on `driver` with `storage_opts` (KEY=VALUE):
// containerd's suite, and our own opaque-key and kill -9 restart tests
// (`run`: a -test.run pattern, all if empty). Skips the calling test when
// the binary is missing; records gtest failures for any failed case, more
// than one skipped case, or a non-zero exit. Prints each case's result and
// time to stderr; DMTHIN_SUITE_VERBOSE=1 also prints the Go program's whole
// output (per case: how long the server took to start and the time spent in
// each method). DMTHIN_SUITE_TIMEOUT: the Go test's -test.timeout (10m).
void RunSnapshotterSuite(const std::string& driver, const std::string& tmp,
                         const std::vector<std::string>& storage_opts = {}, const std::string& run = "");

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_SNAPSHOTTER_SUITE_H_
