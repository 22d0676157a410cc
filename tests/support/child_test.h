// Test support: run one test of this same binary in a child process — the
// crash tests' way to die at a failpoint (base/failpoint.h: exit status 77)
// and then look at what the dead process left, from the parent.
#ifndef DMTHIN_TESTS_SUPPORT_CHILD_TEST_H_
#define DMTHIN_TESTS_SUPPORT_CHILD_TEST_H_

#include <map>
#include <string>

namespace testsupport {

// The exit status of a process that reached its armed failpoint.
inline constexpr int kFailpointExit = 77;

// Runs this test binary (/proc/self/exe) again with --gtest_filter=`test`
// (a helper test such as "ZfsCrashHelper.Run", which skips when its
// variables are absent) and `env` added to its environment; the child's
// stdout goes to /dev/null, its stderr stays (its failures show in the
// log). Returns its exit status, or 128 + the signal that ended it.
int RunTestInChild(const std::string& test, const std::map<std::string, std::string>& env);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_CHILD_TEST_H_
