// Test support: run an external program (argv vector, never a shell string)
// and capture what it printed. Used by tests to drive the reference tools
// (dmsetup, losetup, mkfs.ext4, thin_dump, ...) that dmthin is checked against.
#ifndef DMTHIN_TESTS_SUPPORT_PROCESS_H_
#define DMTHIN_TESTS_SUPPORT_PROCESS_H_

#include <string>
#include <vector>

namespace testsupport {

struct RunResult {
  int exit_code = -1;  // exit status, or 128 + signal number
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
  // "argv[0] exited N: <stderr>" for assertion messages.
  std::string Describe() const;
  std::string command;
};

// Runs argv (argv[0] looked up in PATH) with stdin from /dev/null.
RunResult Run(const std::vector<std::string>& argv, const std::string& stdin_data = "");

// True if `program` is found in PATH.
bool HaveProgram(const std::string& program);

// A name unique to this process and call, e.g. "dmthin-t-1234-7": devices,
// loops and dirs made by tests carry it so a crashed run never collides with
// the next one.
std::string UniqueName(const std::string& prefix);

// Repository root (the directory holding Makefile), from the binary's path.
std::string RepoRoot();

// A tool of this build: <build>/bin/NAME, found from the running binary's
// own path (<build>/tests/<tier>/X_test, <build>/bench/X_bench); NAME alone
// (looked up in PATH) if there is none.
std::string BuiltTool(const std::string& name);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_PROCESS_H_
