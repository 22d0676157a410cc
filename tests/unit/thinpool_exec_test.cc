// thinpool's RunProgram: what it keeps of a program's output.
#include "thinpool/exec.h"

#include "gtest/gtest.h"

namespace thinpool {
namespace {

// Issue 17: a 1 MiB cap once cut thin_dump's device list at ~9,700 devices
// silently and Pool::Check reported the rest missing. Output past the cap is
// now flagged, and the cap is the caller's.
TEST(RunProgramTest, SaysWhenItKeptOnlyPartOfTheOutput) {
  auto head = FindProgram("head");
  if (!head) GTEST_SKIP() << "no head(1)";
  auto r = RunProgram({*head, "-c", "3000000", "/dev/zero"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output.size(), size_t{1} << 20);
  EXPECT_TRUE(r->truncated);

  r = RunProgram({*head, "-c", "3000000", "/dev/zero"}, size_t{4} << 20);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output.size(), 3000000u);
  EXPECT_FALSE(r->truncated);
}

}  // namespace
}  // namespace thinpool
