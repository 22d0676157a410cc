#include "base/size.h"

#include "gtest/gtest.h"

namespace {

TEST(ParseSize, SuffixesArePowersOf1024AndSectors) {
  EXPECT_EQ(*base::ParseSize("4096"), 4096u);
  EXPECT_EQ(*base::ParseSize("4096B"), 4096u);
  EXPECT_EQ(*base::ParseSize("64K"), 65536u);
  EXPECT_EQ(*base::ParseSize("64k"), 65536u);
  EXPECT_EQ(*base::ParseSize("64KiB"), 65536u);
  EXPECT_EQ(*base::ParseSize("512M"), 512ull << 20);
  EXPECT_EQ(*base::ParseSize("10G"), 10ull << 30);
  EXPECT_EQ(*base::ParseSize("2T"), 2ull << 40);
  EXPECT_EQ(*base::ParseSize("2048s"), 2048ull * 512);
  EXPECT_EQ(*base::ParseSize(" 1.5G "), 3ull << 29);
  EXPECT_EQ(*base::ParseSize("0.5K"), 512u);
  EXPECT_EQ(*base::ParseSize("0"), 0u);
}

TEST(ParseSize, RejectsWhatIsNotASize) {
  for (const char* bad : {"", " ", "G", "-1G", "1X", "1.G", "1.3B", "10GG", "1e9", "9999999P",
                          "18446744073709551616"}) {
    auto r = base::ParseSize(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
      EXPECT_NE(r.status().message().find("invalid size"), absl::string_view::npos);
    }
  }
}

TEST(FormatSize, ThreeSignificantDigits) {
  EXPECT_EQ(base::FormatSize(0), "0 B");
  EXPECT_EQ(base::FormatSize(1023), "1023 B");
  EXPECT_EQ(base::FormatSize(1024), "1.00 KiB");
  EXPECT_EQ(base::FormatSize(3ull << 29), "1.50 GiB");
  EXPECT_EQ(base::FormatSize(100ull << 30), "100 GiB");
  EXPECT_EQ(base::FormatSize(15ull << 20), "15.0 MiB");
}

}  // namespace
