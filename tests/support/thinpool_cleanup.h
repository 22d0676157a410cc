// Test support: tear down what a devicemapper graph driver root's own
// thinpool state dir holds (its loopback pools, their loop devices and
// files), whatever state a failed test left it in.
#ifndef DMTHIN_TESTS_SUPPORT_THINPOOL_CLEANUP_H_
#define DMTHIN_TESTS_SUPPORT_THINPOOL_CLEANUP_H_

#include <string>

#include "absl/status/status.h"

namespace testsupport {

// Destroys (force) every pool registered in `driver_root`/thinpool. OK when
// there is no such state dir; otherwise the first failure.
absl::Status DestroyDriverPools(const std::string& driver_root);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_THINPOOL_CLEANUP_H_
