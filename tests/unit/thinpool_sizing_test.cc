// Pure parts of pools and the monitor: the metadata size guide, policy
// validation, status summaries.
#include "gtest/gtest.h"
#include "thinpool/monitor.h"
#include "thinpool/pool.h"

namespace thinpool {
namespace {

TEST(MetadataSizeTest, FollowsTheKernelGuide) {
  constexpr uint64_t GiB = 1ull << 30, MiB = 1ull << 20;
  // 48 bytes per 64 KiB block: 100 GiB → 75 MiB.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB, 64 * 1024), 75 * MiB);
  // Small pools get the 2 MiB minimum.
  EXPECT_EQ(DefaultMetadataBytes(1 * GiB, 64 * 1024), 2 * MiB);
  EXPECT_EQ(DefaultMetadataBytes(0, 64 * 1024), 2 * MiB);
  // Larger blocks need less.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB, 1 * MiB), 4800 * 1024 + 0 * MiB);
  // Capped at the kernel's maximum.
  EXPECT_EQ(DefaultMetadataBytes(1ull << 50, 64 * 1024), kMaxMetadataBytes);
  // Always a multiple of 4 KiB.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB + 12345 * 65536, 64 * 1024) % 4096, 0u);
  // Block size 0 means the default.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB, 0), 75 * MiB);
}

TEST(AutoextendPolicyTest, Validates) {
  AutoextendPolicy p;
  EXPECT_TRUE(p.Validate().ok());
  p.threshold_percent = 0;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.threshold_percent = 101;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.step_percent = 0;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.poll_interval = absl::ZeroDuration();
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.max_metadata_bytes = kMaxMetadataBytes + 1;
  EXPECT_FALSE(p.Validate().ok());
}

TEST(PoolStatusTest, SummarySaysWhatMatters) {
  PoolStatus st;
  st.name = "p";
  EXPECT_NE(st.Summary().find("inactive"), std::string::npos);
  st.active = true;
  st.data_used_bytes = 50;
  st.data_total_bytes = 200;
  st.metadata_total_bytes = 100;
  std::string s = st.Summary();
  EXPECT_NE(s.find("data 25.0%"), std::string::npos) << s;
  EXPECT_NE(s.find("rw"), std::string::npos) << s;
  st.out_of_data_space = true;
  st.needs_check = true;
  s = st.Summary();
  EXPECT_NE(s.find("OUT OF DATA SPACE"), std::string::npos) << s;
  EXPECT_NE(s.find("NEEDS CHECK"), std::string::npos) << s;
  st.failed = true;
  EXPECT_NE(st.Summary().find("FAILED"), std::string::npos);
}

TEST(MonitorEventTest, KindsHaveNames) {
  EXPECT_EQ(MonitorEventKindName(MonitorEvent::Kind::kExtendedData), "extended-data");
  EXPECT_EQ(MonitorEventKindName(MonitorEvent::Kind::kCannotExtend), "cannot-extend");
}

}  // namespace
}  // namespace thinpool
