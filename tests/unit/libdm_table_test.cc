// Typed values, tables (format ⇄ parse), thin statuses and messages.
#include <sys/sysmacros.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libdm/table.h"
#include "libdm/thin.h"
#include "libdm/types.h"

namespace dm {
namespace {

using ::testing::HasSubstr;

TEST(Name, Validation) {
  EXPECT_TRUE(Name::Create("pool-1_a.b").ok());
  EXPECT_TRUE(Name::Create(std::string(127, 'a')).ok());
  EXPECT_THAT(Name::Create(std::string(128, 'a')).status().message(), HasSubstr("limit is 127"));
  EXPECT_THAT(Name::Create("").status().message(), HasSubstr("empty"));
  EXPECT_THAT(Name::Create("a/b").status().message(), HasSubstr("'/'"));
  EXPECT_THAT(Name::Create("a\nb").status().message(), HasSubstr("control character"));
  EXPECT_FALSE(Name::Create(".").ok());
  EXPECT_FALSE(Name::Create("..").ok());
  EXPECT_FALSE(Name::Create("control").ok());
  EXPECT_FALSE(Name::Create(std::string("a\0b", 3)).ok());
}

TEST(Uuid, Validation) {
  EXPECT_TRUE(Uuid::Create("DMTHIN-abc").ok());
  EXPECT_TRUE(Uuid::Create(std::string(128, 'u')).ok());
  EXPECT_FALSE(Uuid::Create(std::string(129, 'u')).ok());
  EXPECT_FALSE(Uuid::Create("").ok());
  EXPECT_FALSE(Uuid::Create("a\tb").ok());
}

TEST(DevNum, KernelEncoding) {
  EXPECT_EQ((DevNum{253, 0}).ToKernel(), 0xfd00u);
  EXPECT_EQ((DevNum{7, 300}).ToKernel(), (300u & 0xff) | (7u << 8) | ((300u & ~0xffu) << 12));
  for (DevNum d : {DevNum{0, 0}, DevNum{253, 255}, DevNum{253, 256}, DevNum{4095, 1048575},
                   DevNum{259, 70000}}) {
    EXPECT_EQ(DevNum::FromKernel(d.ToKernel()), d) << d.ToString();
    EXPECT_EQ(DevNum::FromDevT(d.ToDevT()), d);
  }
  // glibc's dev_t agrees with the kernel's encoding for 12-bit majors.
  EXPECT_EQ((DevNum{253, 70000}).ToKernel(), uint64_t{makedev(253, 70000)});
}

TEST(DevNum, Parse) {
  EXPECT_EQ(*DevNum::Parse("253:12"), (DevNum{253, 12}));
  for (const char* bad : {"", "253", "253:", ":1", "a:1", "1:2:3", "-1:2", "4096:0", "1:1048576",
                          " 1:2"})
    EXPECT_FALSE(DevNum::Parse(bad).ok()) << bad;
}

TEST(Units, Distinct) {
  Sectors s(10);
  EXPECT_EQ((s + Sectors(5)).value(), 15u);
  EXPECT_EQ(BytesOf(SectorsFromBytes(4096)), 4096u);
  static_assert(!std::is_convertible_v<Sectors, DataBlocks>);
  static_assert(!std::is_convertible_v<uint64_t, Sectors>);
  static_assert(!std::is_convertible_v<MetaBlocks, DataBlocks>);
}

// Kernel-format text ⇄ typed target, both ways, identical.
void ExpectRoundTrip(const std::string& type, const std::string& params, const TargetParams& want) {
  auto t = Target::Parse(Sectors(0), Sectors(8), type, params);
  ASSERT_TRUE(t.ok()) << type << " '" << params << "': " << t.status();
  EXPECT_TRUE(t->params == want) << type << " '" << params << "'";
  EXPECT_EQ(t->type(), type);
  EXPECT_EQ(t->FormatParams(), params);
}

TEST(Target, KernelTextRoundTrips) {
  ExpectRoundTrip("linear", "7:0 2048", LinearTarget{{7, 0}, Sectors(2048)});
  ExpectRoundTrip("zero", "", ZeroTarget{});
  ExpectRoundTrip("error", "", ErrorTarget{});
  ExpectRoundTrip("thin-pool", "7:1 7:2 128 0 0 ",
                  ThinPoolTarget{{7, 1}, {7, 2}, Sectors(128), DataBlocks(0)});
  ThinPoolTarget all{{7, 1}, {7, 2}, Sectors(2097152), DataBlocks(1024), true, true, true, true, true};
  ExpectRoundTrip("thin-pool",
                  "7:1 7:2 2097152 1024 5 skip_block_zeroing ignore_discard no_discard_passdown "
                  "read_only error_if_no_space ",
                  all);
  ThinPoolTarget some{{7, 1}, {7, 2}, Sectors(256), DataBlocks(7)};
  some.skip_block_zeroing = true;
  some.error_if_no_space = true;
  ExpectRoundTrip("thin-pool", "7:1 7:2 256 7 2 skip_block_zeroing error_if_no_space ", some);
  ExpectRoundTrip("thin", "253:0 16777215", ThinTarget{{253, 0}, 16777215, std::nullopt});
  ExpectRoundTrip("thin", "253:0 5 7:3", ThinTarget{{253, 0}, 5, DevNum{7, 3}});
  FlakeyTarget f{{7, 0}, Sectors(0), 1, 1, FlakeyTarget::DownMode::kFailAll, std::nullopt};
  ExpectRoundTrip("flakey", "7:0 0 1 1 0", f);
  f.down_mode = FlakeyTarget::DownMode::kDropWrites;
  ExpectRoundTrip("flakey", "7:0 0 1 1 1 drop_writes", f);
  f.down_mode = FlakeyTarget::DownMode::kErrorWrites;
  f.corrupt = FlakeyTarget::CorruptBioByte{32, true, 255, 0};
  ExpectRoundTrip("flakey", "7:0 0 1 1 6 error_writes corrupt_bio_byte 32 w 255 0", f);
  ExpectRoundTrip("striped", "2 128 7:0 0 7:1 0", OtherTarget{"striped", "2 128 7:0 0 7:1 0"});
}

TEST(Target, ParseAcceptsInputForms) {
  // Feature order and a missing feature count are fine on input.
  auto t = Target::Parse(Sectors(0), Sectors(8), "thin-pool",
                         "7:1 7:2 128 10 2 error_if_no_space skip_block_zeroing");
  ASSERT_TRUE(t.ok()) << t.status();
  auto& p = std::get<ThinPoolTarget>(t->params);
  EXPECT_TRUE(p.error_if_no_space && p.skip_block_zeroing);
  EXPECT_EQ(t->FormatParams(), "7:1 7:2 128 10 2 skip_block_zeroing error_if_no_space ");
  EXPECT_TRUE(Target::Parse(Sectors(0), Sectors(8), "thin-pool", "7:1 7:2 128 10").ok());
}

TEST(Target, ParseRejects) {
  struct Case {
    const char* type;
    const char* params;
    const char* why;
  } cases[] = {
      {"linear", "/dev/loop0 0", "MAJOR:MINOR"},
      {"linear", "7:0", "missing offset"},
      {"linear", "7:0 0 9", "unexpected '9'"},
      {"linear", "7:0 -1", "not a number"},
      {"zero", "x", "unexpected"},
      {"thin-pool", "7:1 7:2 128 0 1", "feature count 1 but 0"},
      {"thin-pool", "7:1 7:2 128 0 1 bogus", "unknown feature 'bogus'"},
      {"thin-pool", "7:1 7:2 128 0 2 read_only read_only", "repeated"},
      {"thin", "253:0", "missing device id"},
      {"thin", "253:0 1 2 3", "MAJOR:MINOR"},
      {"flakey", "7:0 0 1 1 2 drop_writes error_writes", "exclude"},
      {"flakey", "7:0 0 1 1 5 corrupt_bio_byte 1 x 0 0", "r or w"},
  };
  for (const Case& c : cases) {
    auto t = Target::Parse(Sectors(0), Sectors(8), c.type, c.params);
    ASSERT_FALSE(t.ok()) << c.type << " " << c.params;
    EXPECT_THAT(t.status().message(), HasSubstr(c.why)) << c.type << " " << c.params;
  }
  EXPECT_FALSE(Target::Parse(Sectors(0), Sectors(8), "sixteen-chars-xx", "").ok());
}

TEST(Table, ValidateAndText) {
  Table t({Target{Sectors(0), Sectors(100), LinearTarget{{7, 0}, Sectors(0)}},
           Target{Sectors(100), Sectors(28), ZeroTarget{}}});
  EXPECT_TRUE(t.Validate().ok());
  EXPECT_EQ(t.size(), Sectors(128));
  EXPECT_EQ(t.ToString(), "0 100 linear 7:0 0\n100 28 zero \n");
  auto back = Table::ParseText(t.ToString());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, t);

  EXPECT_THAT(Table().Validate().message(), HasSubstr("no targets"));
  Table gap({Target{Sectors(0), Sectors(10), ZeroTarget{}},
             Target{Sectors(11), Sectors(10), ZeroTarget{}}});
  EXPECT_THAT(gap.Validate().message(), HasSubstr("contiguous"));
  Table zero_len({Target{Sectors(0), Sectors(0), ZeroTarget{}}});
  EXPECT_THAT(zero_len.Validate().message(), HasSubstr("length is 0"));
  Table bad_bs = Table::Single(Sectors(8), ThinPoolTarget{{7, 1}, {7, 2}, Sectors(100), DataBlocks(0)});
  EXPECT_THAT(bad_bs.Validate().message(), HasSubstr("multiple of 128"));
  Table bad_id = Table::Single(Sectors(8), ThinTarget{{253, 0}, 1u << 24, std::nullopt});
  EXPECT_THAT(bad_id.Validate().message(), HasSubstr("24 bits"));
  Table bad_flakey = Table::Single(Sectors(8), FlakeyTarget{{7, 0}, Sectors(0), 0, 0, FlakeyTarget::DownMode::kFailAll, std::nullopt});
  EXPECT_THAT(bad_flakey.Validate().message(), HasSubstr("interval"));
  EXPECT_FALSE(Table::ParseText("0 x linear 7:0 0").ok());
}

// ---- thin-pool status: every documented form.

TEST(ThinPoolStatus, Fresh) {
  const std::string text = "0 1655/16384 530/16384 - rw discard_passdown queue_if_no_space - 1024 ";
  auto s = ParseThinPoolStatus(text);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->ok());
  EXPECT_EQ(s->transaction_id, 0u);
  EXPECT_EQ(s->used_metadata, MetaBlocks(1655));
  EXPECT_EQ(s->total_metadata, MetaBlocks(16384));
  EXPECT_EQ(s->used_data, DataBlocks(530));
  EXPECT_EQ(s->total_data, DataBlocks(16384));
  EXPECT_FALSE(s->held_metadata_root.has_value());
  EXPECT_EQ(s->mode, ThinPoolStatus::Mode::kReadWrite);
  EXPECT_EQ(s->discard, ThinPoolStatus::Discard::kPassdown);
  EXPECT_EQ(s->no_space, ThinPoolStatus::NoSpace::kQueue);
  EXPECT_FALSE(s->needs_check);
  EXPECT_EQ(s->metadata_low_watermark, MetaBlocks(1024));
  EXPECT_EQ(FormatThinPoolStatus(*s), text);
}

TEST(ThinPoolStatus, AllForms) {
  const char* texts[] = {
      "Fail",
      "Error",
      "7 10/100 100/100 - out_of_data_space no_discard_passdown error_if_no_space - 10 ",
      "7 10/100 20/100 1234 ro ignore_discard queue_if_no_space needs_check 10 ",
      "9 100/100 20/100 - ro discard_passdown error_if_no_space needs_check 10 ",
      // Older kernels: fewer trailing fields.
      "3 1/2 3/4 - rw ",
      "3 1/2 3/4 - rw discard_passdown ",
      "3 1/2 3/4 88 rw discard_passdown queue_if_no_space - ",
  };
  for (const char* t : texts) {
    auto s = ParseThinPoolStatus(t);
    ASSERT_TRUE(s.ok()) << t << ": " << s.status();
    EXPECT_EQ(FormatThinPoolStatus(*s), t);
  }
  EXPECT_EQ(ParseThinPoolStatus("Fail")->health, ThinPoolStatus::Health::kFail);
  EXPECT_EQ(ParseThinPoolStatus("Error")->health, ThinPoolStatus::Health::kError);
  auto held = ParseThinPoolStatus(texts[3]);
  EXPECT_EQ(held->held_metadata_root, 1234u);
  EXPECT_EQ(held->mode, ThinPoolStatus::Mode::kReadOnly);
  EXPECT_TRUE(held->needs_check);
  EXPECT_EQ(held->discard, ThinPoolStatus::Discard::kIgnore);
  auto oods = ParseThinPoolStatus(texts[2]);
  EXPECT_EQ(oods->mode, ThinPoolStatus::Mode::kOutOfDataSpace);
  EXPECT_EQ(oods->no_space, ThinPoolStatus::NoSpace::kError);
}

TEST(ThinPoolStatus, Malformed) {
  const char* bad[] = {"",
                       "Failed",
                       "0 1/2 3/4 -",
                       "x 1/2 3/4 - rw",
                       "0 3/2 3/4 - rw",  // used > total
                       "0 1-2 3/4 - rw",
                       "0 1/2 3/4 x rw",
                       "0 1/2 3/4 - rx",
                       "0 1/2 3/4 - rw passdown",
                       "0 1/2 3/4 - rw discard_passdown queue",
                       "0 1/2 3/4 - rw discard_passdown queue_if_no_space check",
                       "0 1/2 3/4 - rw discard_passdown queue_if_no_space - x",
                       "0 1/2 3/4 - rw discard_passdown queue_if_no_space - 1 extra",
                       "99999999999999999999999 1/2 3/4 - rw"};
  for (const char* t : bad) EXPECT_FALSE(ParseThinPoolStatus(t).ok()) << t;
}

TEST(ThinStatus, AllForms) {
  auto s = ParseThinStatus("2048 4095");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->mapped, Sectors(2048));
  EXPECT_EQ(s->highest_mapped, Sectors(4095));
  auto empty = ParseThinStatus("0 -");
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->highest_mapped.has_value());
  EXPECT_EQ(ParseThinStatus("Fail")->health, ThinStatus::Health::kFail);
  EXPECT_EQ(ParseThinStatus("Error")->health, ThinStatus::Health::kError);
  EXPECT_EQ(ParseThinStatus("-")->health, ThinStatus::Health::kUnavailable);
  for (const char* t : {"2048 4095", "0 -", "Fail", "Error", "-"})
    EXPECT_EQ(FormatThinStatus(*ParseThinStatus(t)), t);
  for (const char* t : {"", "x", "1", "1 2 3", "a -", "1 b"})
    EXPECT_FALSE(ParseThinStatus(t).ok()) << t;
}

TEST(ThinMessages, Format) {
  EXPECT_EQ(*FormatThinPoolMessage(thin_msg::CreateThin{5}), "create_thin 5");
  EXPECT_EQ(*FormatThinPoolMessage(thin_msg::CreateSnap{6, 5}), "create_snap 6 5");
  EXPECT_EQ(*FormatThinPoolMessage(thin_msg::Delete{16777215}), "delete 16777215");
  EXPECT_EQ(*FormatThinPoolMessage(thin_msg::SetTransactionId{3, 4}), "set_transaction_id 3 4");
  EXPECT_EQ(*FormatThinPoolMessage(thin_msg::ReserveMetadataSnap{}), "reserve_metadata_snap");
  EXPECT_EQ(*FormatThinPoolMessage(thin_msg::ReleaseMetadataSnap{}), "release_metadata_snap");
  EXPECT_THAT(FormatThinPoolMessage(thin_msg::CreateThin{1u << 24}).status().message(),
              HasSubstr("24-bit"));
  EXPECT_FALSE(FormatThinPoolMessage(thin_msg::CreateSnap{5, 5}).ok());
  EXPECT_FALSE(FormatThinPoolMessage(thin_msg::CreateSnap{5, 1u << 24}).ok());
}

}  // namespace
}  // namespace dm
