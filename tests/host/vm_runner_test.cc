// The tests/vm/run interface that the vm tier and every engineer rely on:
// CMD's stdout and stderr arrive separately, its exit status is returned,
// the guest has a real device-mapper with thin targets, and the caller's
// directory and environment carry over.
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace {



class VmRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (getenv("DMTHIN_IN_VM")) GTEST_SKIP() << "already inside the VM";
    if (!testsupport::HaveProgram("qemu-system-x86_64"))
      GTEST_SKIP() << "qemu-system-x86_64 not installed (make deps)";
    runner_ = testsupport::RepoRoot() + "/tests/vm/run";
  }
  std::string runner_;
};

TEST_F(VmRunnerTest, SeparatesStreamsPropagatesStatusAndHasDmThin) {
  setenv("DMTHIN_RUNNER_PROBE", "carried over", 1);
  auto r = testsupport::Run({runner_, "--timeout", "120", "--", "sh", "-c",
                "echo to-stdout; echo to-stderr >&2; echo \"$DMTHIN_RUNNER_PROBE\"; "
                "pwd; dmsetup targets; exit 7"});
  unsetenv("DMTHIN_RUNNER_PROBE");
  EXPECT_EQ(r.exit_code, 7) << r.Describe();
  EXPECT_NE(r.out.find("to-stdout\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("to-stderr"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("to-stderr\n"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("carried over\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(testsupport::RepoRoot() + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("thin-pool"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("thin "), std::string::npos) << r.out;
}

TEST_F(VmRunnerTest, HungGuestIsKilledAtTheTimeout) {
  auto r = testsupport::Run({runner_, "--timeout", "12", "--", "sleep", "600"});
  EXPECT_EQ(r.exit_code, 124) << r.Describe();
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

TEST_F(VmRunnerTest, RejectsBadArguments) {
  auto r = testsupport::Run({runner_, "--timeout", "soon", "--", "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("--timeout"), std::string::npos) << r.err;
  r = testsupport::Run({runner_});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("no command"), std::string::npos) << r.err;
}

}  // namespace
