// Pure parts of pools and the monitor: the metadata size guide, policy
// validation, status summaries.
#include "gtest/gtest.h"
#include "thinpool/monitor.h"
#include "thinpool/pool.h"
#include "tests/support/process.h"

namespace thinpool {
namespace {

TEST(MetadataSizeTest, FollowsTheKernelGuidePlusRoomForDevices) {
  constexpr uint64_t GiB = 1ull << 30, MiB = 1ull << 20;
  constexpr uint64_t kThins = kDefaultMaxThins * kMetadataBytesPerThin;  // 78.125 MiB
  // 48 bytes per 64 KiB block: 100 GiB → 75 MiB, plus the devices' room.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB, 64 * 1024), 75 * MiB + kThins);
  // Small pools get the 2 MiB minimum for the mappings.
  EXPECT_EQ(DefaultMetadataBytes(1 * GiB, 64 * 1024), 2 * MiB + kThins);
  EXPECT_EQ(DefaultMetadataBytes(0, 64 * 1024), 2 * MiB + kThins);
  // Larger blocks need less.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB, 1 * MiB), 4800 * 1024 + kThins);
  // Capped at the kernel's maximum.
  EXPECT_EQ(DefaultMetadataBytes(1ull << 50, 64 * 1024), kMaxMetadataBytes);
  // Always a multiple of 4 KiB.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB + 12345 * 65536, 64 * 1024) % 4096, 0u);
  // Block size 0 means the default.
  EXPECT_EQ(DefaultMetadataBytes(100 * GiB, 0), 75 * MiB + kThins);
}

// Issue 17: the default holds 10,000 thin devices by thin-provisioning-tools'
// own estimate, for every data size up to where the kernel's maximum caps it.
TEST(MetadataSizeTest, HoldsTenThousandThinsByThinMetadataSize) {
  constexpr uint64_t KiB = 1024, GiB = 1ull << 30, TiB = GiB << 10;
  for (uint64_t data : {16 * 64 * KiB, 1 * GiB, 4 * GiB, 100 * GiB, 1 * TiB, 10 * TiB}) {
    auto g = PlanPoolGeometry(data, {}, {}, {});
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_GE(g->metadata_bytes,
              ThinMetadataSizeEstimate(g->data_bytes / g->block_bytes, kDefaultMaxThins))
        << data;
  }
  // The estimate is the tool's: check it against thin_metadata_size itself.
  if (!testsupport::HaveProgram("thin_metadata_size")) {
    GTEST_SKIP() << "thin_metadata_size (thin-provisioning-tools) not installed";
  }
  for (uint64_t gib : {1, 4, 100, 1024}) {
    testsupport::RunResult r = testsupport::Run(
        {"thin_metadata_size", "-b", "64k", "-s", std::to_string(gib) + "g", "-m",
         std::to_string(kDefaultMaxThins), "-u", "k", "-n"});
    ASSERT_TRUE(r.ok()) << r.Describe();
    // -n prints the bare number of KiB, e.g. "40520.00" (0.9) or "40520" (1.x).
    const double tool_kib = std::stod(r.out);
    const uint64_t ours = ThinMetadataSizeEstimate(gib * GiB / (64 * KiB), kDefaultMaxThins);
    EXPECT_NEAR(static_cast<double>(ours) / 1024, tool_kib, 8) << r.out;
    EXPECT_GE(DefaultMetadataBytes(gib * GiB, 64 * KiB), static_cast<uint64_t>(tool_kib * 1024))
        << gib << " GiB";
  }
}

// Item 7 and 9 of issue 11: sizes are checked against the kernel's limits
// and the block size is chosen for the data, before anything is made.
TEST(PoolGeometryTest, ChoosesTheBlockSizeForTheData) {
  constexpr uint64_t KiB = 1024, MiB = KiB << 10, GiB = MiB << 10, TiB = GiB << 10;
  auto g = PlanPoolGeometry(100 * GiB, {}, {}, {});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->block_bytes, 64 * KiB);
  EXPECT_EQ(g->metadata_bytes, DefaultMetadataBytes(100 * GiB, 64 * KiB));
  EXPECT_EQ(g->low_water_blocks, (100 * GiB / (64 * KiB)) / 5);
  // 100 TiB: the guide at 64 KiB blocks is 75 GiB of metadata, above the
  // kernel's ~16 GiB; 512 KiB blocks need 9.4 GiB.
  g = PlanPoolGeometry(100 * TiB, {}, {}, {});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->block_bytes, 512 * KiB);
  EXPECT_EQ(g->metadata_bytes, DefaultMetadataBytes(100 * TiB, 512 * KiB));
  EXPECT_LE(g->metadata_bytes, kMaxMetadataBytes);
  g = PlanPoolGeometry(1000 * TiB, {}, {}, {});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->block_bytes, 4 * MiB);
  // What formatting writes: measured 421 MiB for 100 TiB of 64 KiB blocks.
  uint64_t format = FormatMetadataBytes(100 * TiB / (64 * KiB));
  EXPECT_GE(format, 421 * MiB);
  EXPECT_LE(format, 440 * MiB);
}

TEST(PoolGeometryTest, RefusesWhatTheKernelCannotDo) {
  constexpr uint64_t KiB = 1024, MiB = KiB << 10, GiB = MiB << 10, TiB = GiB << 10;
  // A given block size too small for the data names the one that works.
  auto g = PlanPoolGeometry(100 * TiB, 64 * KiB, {}, {});
  ASSERT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("512 KiB"), std::string::npos) << g.status();
  EXPECT_FALSE(PlanPoolGeometry(1 * GiB, 100 * KiB, {}, {}).ok());
  EXPECT_FALSE(PlanPoolGeometry(1 * GiB, 2 * GiB, {}, {}).ok());
  EXPECT_FALSE(PlanPoolGeometry(1 * GiB, 0, {}, {}).ok());
  // Beyond what even 1 GiB blocks address.
  EXPECT_FALSE(PlanPoolGeometry(uint64_t{400} << 50, {}, {}, {}).ok());
  // --data-size 64K: one block; the message is about the data size, not a
  // low-water mark nobody gave.
  g = PlanPoolGeometry(64 * KiB, {}, {}, {});
  ASSERT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("at least 16 blocks"), std::string::npos) << g.status();
  EXPECT_EQ(g.status().message().find("low"), std::string::npos) << g.status();
  EXPECT_FALSE(PlanPoolGeometry(0, {}, {}, {}).ok());
  g = PlanPoolGeometry(1 * MiB, {}, {}, {});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->low_water_blocks, 3u);
  // --metadata-size 0 is an error, not the 2 MiB minimum.
  g = PlanPoolGeometry(1 * GiB, {}, 0, {});
  ASSERT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("below the minimum"), std::string::npos) << g.status();
  EXPECT_FALSE(PlanPoolGeometry(1 * GiB, {}, 1 * MiB, {}).ok());
  EXPECT_FALSE(PlanPoolGeometry(1 * GiB, {}, kMaxMetadataBytes + 4096, {}).ok());
  // Metadata smaller than the formatted space maps.
  g = PlanPoolGeometry(100 * TiB, {}, 32 * MiB, {});
  ASSERT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("too small"), std::string::npos) << g.status();
  // A given low-water mark must be below the data blocks; 0 means none.
  g = PlanPoolGeometry(1 * MiB, {}, {}, 16);
  ASSERT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("low-water mark of 16"), std::string::npos) << g.status();
  g = PlanPoolGeometry(1 * MiB, {}, {}, 0);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->low_water_blocks, 0u);
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
