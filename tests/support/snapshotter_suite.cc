#include "tests/support/snapshotter_suite.h"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace testsupport {

std::string SnapshotterSuiteBin() {
  return std::filesystem::path(BuiltTool("dmthin-snapshotter")).parent_path().parent_path().string() +
         "/go/snapshotter-suite.test";
}

void RunSnapshotterSuite(const std::string& driver, const std::string& tmp,
                         const std::vector<std::string>& storage_opts, const std::string& run) {
  if (access(SnapshotterSuiteBin().c_str(), X_OK) != 0) {
    GTEST_SKIP() << "no " << SnapshotterSuiteBin() << " (make tests builds it)";
  }
  const char* timeout = getenv("DMTHIN_SUITE_TIMEOUT");
  std::vector<std::string> argv = {"env",
                                   "DMTHIN_SNAPSHOTTER=" + BuiltTool("dmthin-snapshotter"),
                                   "DMTHIN_DRIVER=" + driver,
                                   "DMTHIN_STORAGE_OPTS=" + absl::StrJoin(storage_opts, " "),
                                   "TMPDIR=" + tmp,
                                   SnapshotterSuiteBin(),
                                   "-test.v",
                                   std::string("-test.timeout=") + (timeout != nullptr ? timeout : "10m")};
  if (!run.empty()) {
    argv.push_back("-test.run");
    argv.push_back(run);
  }
  auto start = std::chrono::steady_clock::now();
  RunResult r = Run(argv);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::regex result_line(R"(^\s*--- (PASS|FAIL|SKIP): (\S+))");
  std::istringstream lines(r.out);
  std::string line;
  int passed = 0, failed = 0, skipped = 0;
  std::set<std::string> failures;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, result_line)) continue;
    std::string name = m[2];
    if (name == "TestSnapshotterSuite") continue;  // the parent of the suite's cases
    size_t slash = name.find('/');
    std::string sub = slash == std::string::npos ? name : name.substr(slash + 1);
    std::cerr << "  " << line.substr(line.find("---")) << "\n";  // with the case's time, "(12.34s)"
    if (m[1] == "PASS") ++passed;
    if (m[1] == "SKIP") ++skipped;
    if (m[1] == "FAIL") {
      ++failed;
      failures.insert(sub);
    }
  }
  if (getenv("DMTHIN_SUITE_VERBOSE") != nullptr) std::cerr << r.out << r.err;
  std::cerr << driver << ": " << passed << " passed, " << failed << " failed, " << skipped << " skipped in "
            << static_cast<int>(seconds) << " s\n";
  EXPECT_GT(passed, 0) << r.Describe();
  EXPECT_EQ(failed, 0) << "failed: " << ::testing::PrintToString(failures) << "\n" << r.out << r.err;
  EXPECT_LE(skipped, 1) << "the suite itself skips one (Rename on a kernel without overlay redirect_dir)";
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

}  // namespace testsupport
