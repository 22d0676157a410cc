#include "base/status.h"

#include <cerrno>

#include "gtest/gtest.h"

namespace {

TEST(ErrnoError, KeepsErrnoAndContext) {
  absl::Status s = base::ErrnoError(EBUSY, "removing pool0");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(base::HasErrno(s, EBUSY));
  EXPECT_NE(s.message().find("removing pool0: Device or resource busy"), absl::string_view::npos);
  absl::Status a = base::Annotate(s, "deactivating pool0");
  EXPECT_TRUE(base::HasErrno(a, EBUSY));
  EXPECT_EQ(a.message().substr(0, 20), "deactivating pool0: ");
  EXPECT_FALSE(base::GetErrno(absl::InternalError("x")).has_value());
}

TEST(WithErrno, AttachesErrnoKeepingCodeAndMessage) {
  absl::Status s = base::WithErrno(absl::FailedPreconditionError("thin 'a' is in use"), EBUSY);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "thin 'a' is in use");
  EXPECT_TRUE(base::HasErrno(s, EBUSY));
  EXPECT_TRUE(base::HasErrno(base::Annotate(s, "deleting"), EBUSY));
  EXPECT_TRUE(base::WithErrno(absl::OkStatus(), EBUSY).ok());
}

}  // namespace
