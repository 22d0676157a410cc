// Encoding and decoding of dm ioctl buffers, checked byte by byte against
// the kernel header's struct layout.
#include "libdm/wire.h"

#include <linux/dm-ioctl.h>

#include <cstddef>
#include <cstring>

#include "base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dm::wire {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The ABI this library is written against.
static_assert(sizeof(struct dm_ioctl) == 312);
static_assert(offsetof(struct dm_ioctl, data_size) == 12);
static_assert(offsetof(struct dm_ioctl, data_start) == 16);
static_assert(offsetof(struct dm_ioctl, event_nr) == 32);
static_assert(offsetof(struct dm_ioctl, dev) == 40);
static_assert(offsetof(struct dm_ioctl, name) == 48);
static_assert(offsetof(struct dm_ioctl, uuid) == 176);
static_assert(sizeof(struct dm_target_spec) == 40);
static_assert(offsetof(struct dm_target_spec, next) == 20);
static_assert(offsetof(struct dm_target_spec, target_type) == 24);
static_assert(offsetof(struct dm_name_list, name) == 12);
static_assert(offsetof(struct dm_target_versions, name) == 16);
static_assert(offsetof(struct dm_target_msg, message) == 8);
static_assert(offsetof(struct dm_target_deps, dev) == 8);

template <typename T>
T At(const Buffer& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

std::string StrAt(const Buffer& b, size_t off) {
  return std::string(reinterpret_cast<const char*>(b.data() + off));
}

TEST(WireEncode, TableLoadLayout) {
  Request req;
  req.command = Command::kTableLoad;
  req.name = "pool";
  req.flags = DM_READONLY_FLAG;
  req.targets.push_back({0, 1000, "linear", "7:0 0"});       // 5+1 -> 8
  req.targets.push_back({1000, 24, "zero", ""});             // 0+1 -> 8
  req.targets.push_back({1024, 8, "error", "abcdefgh"});     // 8+1 -> 16
  Buffer b;
  ASSERT_TRUE(Encode(req, Version{4, 0, 0}, 0, &b).ok());
  const size_t spec0 = 312, spec1 = spec0 + 48, spec2 = spec1 + 48;
  EXPECT_EQ(b.size(), spec2 + 56);
  const struct dm_ioctl* h = b.header();
  EXPECT_EQ(h->version[0], 4u);
  EXPECT_EQ(h->version[1], 0u);
  EXPECT_EQ(h->data_start, 312u);
  EXPECT_EQ(h->data_size, b.size());
  EXPECT_EQ(h->target_count, 3u);
  EXPECT_EQ(h->flags, uint32_t{DM_READONLY_FLAG});
  EXPECT_STREQ(h->name, "pool");
  EXPECT_EQ(h->uuid[0], '\0');
  // spec 0
  EXPECT_EQ(At<uint64_t>(b, spec0 + 0), 0u);
  EXPECT_EQ(At<uint64_t>(b, spec0 + 8), 1000u);
  EXPECT_EQ(At<int32_t>(b, spec0 + 16), 0);
  EXPECT_EQ(At<uint32_t>(b, spec0 + 20), 48u);  // relative to this spec
  EXPECT_EQ(StrAt(b, spec0 + 24), "linear");
  EXPECT_EQ(StrAt(b, spec0 + 40), "7:0 0");
  EXPECT_EQ(b.data()[spec0 + 40 + 5], 0);  // NUL + padding to 8
  EXPECT_EQ(b.data()[spec0 + 40 + 7], 0);
  // spec 1: next is again relative to itself, not to the first spec
  EXPECT_EQ(At<uint64_t>(b, spec1 + 0), 1000u);
  EXPECT_EQ(At<uint32_t>(b, spec1 + 20), 48u);
  EXPECT_EQ(StrAt(b, spec1 + 24), "zero");
  EXPECT_EQ(StrAt(b, spec1 + 40), "");
  // spec 2: 8 bytes of params + NUL pad to 16
  EXPECT_EQ(At<uint32_t>(b, spec2 + 20), 56u);
  EXPECT_EQ(StrAt(b, spec2 + 40), "abcdefgh");
  EXPECT_EQ((spec2 + 56) % 8, 0u);
}

TEST(WireEncode, BufferSizeLeavesResultRoom) {
  Request req;
  req.command = Command::kListDevices;
  Buffer b;
  ASSERT_TRUE(Encode(req, Version{4, 0, 0}, kInitialBufferSize, &b).ok());
  EXPECT_EQ(b.header()->data_size, kInitialBufferSize);
  EXPECT_EQ(b.header()->data_start, 312u);
  // Header-only commands send just the header.
  req.command = Command::kDevCreate;
  ASSERT_TRUE(Encode(req, Version{4, 0, 0}, 0, &b).ok());
  EXPECT_EQ(b.header()->data_size, 312u);
}

TEST(WireEncode, RenameAndUuid) {
  Request req;
  req.command = Command::kDevRename;
  req.name = "old";
  req.text = "new-uuid";
  req.flags = DM_UUID_FLAG;
  req.event_nr = 0x00400000;
  Buffer b;
  ASSERT_TRUE(Encode(req, Version{4, 19, 0}, 0, &b).ok());
  EXPECT_EQ(StrAt(b, 312), "new-uuid");
  EXPECT_EQ(b.header()->event_nr, 0x00400000u);
  EXPECT_EQ(b.header()->version[1], 19u);
  EXPECT_EQ(b.size(), 312u + 16);
}

TEST(WireEncode, Message) {
  Request req;
  req.command = Command::kTargetMsg;
  req.dev = DevNum{253, 3}.ToKernel();
  req.message_sector = 77;
  req.text = "create_thin 5";
  Buffer b;
  ASSERT_TRUE(Encode(req, Version{4, 2, 0}, 0, &b).ok());
  EXPECT_EQ(At<uint64_t>(b, 312), 77u);
  EXPECT_EQ(StrAt(b, 320), "create_thin 5");
  EXPECT_EQ(b.header()->dev, 0xfd03u);
  EXPECT_EQ(b.size() % 8, 0u);
}

TEST(WireEncode, Geometry) {
  Request req;
  req.command = Command::kDevSetGeometry;
  req.name = "d";
  req.text = "100 4 32 0";
  Buffer b;
  ASSERT_TRUE(Encode(req, Version{4, 6, 0}, 0, &b).ok());
  EXPECT_EQ(StrAt(b, 312), "100 4 32 0");
}

TEST(WireEncode, RejectsBadInput) {
  Buffer b;
  Request req;
  req.command = Command::kTableLoad;
  req.flags = DM_SUSPEND_FLAG;
  absl::Status s = Encode(req, Version{4, 0, 0}, 0, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("DM_TABLE_LOAD does not accept flags 0x2"));

  req.flags = 0;
  req.name = std::string(128, 'n');
  EXPECT_THAT(Encode(req, Version{4, 0, 0}, 0, &b).message(), HasSubstr("limit is 127"));
  req.name = "ok";
  req.uuid = std::string(129, 'u');
  EXPECT_THAT(Encode(req, Version{4, 0, 0}, 0, &b).message(), HasSubstr("limit is 128"));
  req.uuid.clear();
  req.targets.push_back({0, 8, "a-very-long-type", ""});  // 16 bytes
  EXPECT_THAT(Encode(req, Version{4, 0, 0}, 0, &b).message(), HasSubstr("target type"));
  req.targets[0] = {0, 8, "zero", std::string("a\0b", 3)};
  EXPECT_THAT(Encode(req, Version{4, 0, 0}, 0, &b).message(), HasSubstr("NUL"));

  Request rename;
  rename.command = Command::kDevRename;
  rename.name = "x";
  EXPECT_FALSE(Encode(rename, Version{4, 0, 0}, 0, &b).ok());  // empty new name
  rename.text = std::string(128, 'n');
  EXPECT_FALSE(Encode(rename, Version{4, 0, 0}, 0, &b).ok());
  rename.flags = DM_UUID_FLAG;  // uuids may be 128
  EXPECT_TRUE(Encode(rename, Version{4, 19, 0}, 0, &b).ok());
}

TEST(CommandTable, EveryCommandDescribed) {
  for (int i = 0; i < kCommandCount; ++i) {
    const CommandInfo& c = GetCommandInfo(static_cast<Command>(i));
    EXPECT_EQ(static_cast<int>(c.command), i);
    EXPECT_EQ(_IOC_NR(c.request), static_cast<unsigned>(i)) << c.name;
    EXPECT_EQ(_IOC_TYPE(c.request), unsigned{DM_IOCTL}) << c.name;
    EXPECT_EQ(_IOC_SIZE(c.request), sizeof(struct dm_ioctl)) << c.name;
  }
  EXPECT_EQ(GetCommandInfo(Command::kDevArmPoll).min_version, (Version{4, 36, 0}));
  EXPECT_EQ(GetCommandInfo(Command::kGetTargetVersion).min_version, (Version{4, 41, 0}));
  EXPECT_EQ(GetCommandInfo(Command::kTargetMsg).min_version, (Version{4, 2, 0}));
  EXPECT_EQ(MinVersionForFlags(DM_DEFERRED_REMOVE), (Version{4, 27, 0}));
  EXPECT_EQ(MinVersionForFlags(0), (Version{4, 0, 0}));
}

// ---- Decoding hand-built kernel replies.

class Reply {
 public:
  explicit Reply(size_t size = 4096, Version v = {4, 47, 0}) : b_(size) {
    std::memset(b_.data(), 0, size);
    h()->version[0] = v.major;
    h()->version[1] = v.minor;
    h()->version[2] = v.patch;
    h()->data_start = 312;
    h()->data_size = 312;
  }
  struct dm_ioctl* h() { return b_.header(); }
  template <typename T>
  void Put(size_t off, T v) {
    std::memcpy(b_.data() + off, &v, sizeof v);
  }
  void PutStr(size_t off, const std::string& s) {
    std::memcpy(b_.data() + off, s.c_str(), s.size() + 1);
  }
  void End(size_t off) { h()->data_size = static_cast<uint32_t>(off); }
  absl::StatusOr<Response> Parse() const { return ParseResponse(b_.bytes()); }

 private:
  Buffer b_;
};

// A name-list record at `at`; returns the aligned end.
size_t PutName(Reply& r, size_t at, DevNum dev, const std::string& name, uint32_t next,
               std::optional<std::string> uuid, bool extras = true) {
  r.Put<uint64_t>(at, dev.ToKernel());
  r.Put<uint32_t>(at + 8, next);
  r.PutStr(at + 12, name);
  size_t end = Align8(at + 12 + name.size() + 1);
  if (!extras) return end;
  r.Put<uint32_t>(end, 42);  // event_nr
  r.Put<uint32_t>(end + 4, uuid ? DM_NAME_LIST_FLAG_HAS_UUID : DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID);
  size_t u = end + 8;
  if (uuid) {
    r.PutStr(u, *uuid);
    u += uuid->size() + 1;
  }
  return Align8(u);
}

TEST(WireDecode, DeviceListWithUuids) {
  Reply r;
  size_t a = 312;
  size_t b = PutName(r, a, {253, 0}, "pool", 0, std::string("UUID-1"));
  r.Put<uint32_t>(a + 8, static_cast<uint32_t>(b - a));
  size_t end = PutName(r, b, {253, 1}, "thin", 0, std::nullopt);
  r.End(end);
  auto resp = r.Parse();
  ASSERT_TRUE(resp.ok()) << resp.status();
  auto list = DecodeDeviceList(*resp);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "pool");
  EXPECT_EQ((*list)[0].dev, (DevNum{253, 0}));
  EXPECT_EQ((*list)[0].event_nr, 42u);
  EXPECT_EQ((*list)[0].uuid, "UUID-1");
  EXPECT_TRUE((*list)[0].uuid_known);
  EXPECT_EQ((*list)[1].name, "thin");
  EXPECT_EQ((*list)[1].dev, (DevNum{253, 1}));
  EXPECT_FALSE((*list)[1].uuid.has_value());
  EXPECT_TRUE((*list)[1].uuid_known);
}

TEST(WireDecode, DeviceListOldKernelHasNoExtras) {
  Reply r(4096, {4, 30, 0});
  size_t a = 312;
  size_t b = PutName(r, a, {253, 0}, "a", 0, std::nullopt, false);
  r.Put<uint32_t>(a + 8, static_cast<uint32_t>(b - a));
  size_t end = PutName(r, b, {253, 7}, "bb", 0, std::nullopt, false);
  r.End(end);
  auto list = DecodeDeviceList(*r.Parse());
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_FALSE((*list)[0].event_nr.has_value());
  EXPECT_FALSE((*list)[1].uuid_known);
  EXPECT_EQ((*list)[1].dev, (DevNum{253, 7}));
}

TEST(WireDecode, DeviceListEmpty) {
  Reply r;
  r.End(312 + 16);  // one record with dev == 0
  auto list = DecodeDeviceList(*r.Parse());
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  Reply none;
  none.End(312);
  EXPECT_TRUE(DecodeDeviceList(*none.Parse())->empty());
}

TEST(WireDecode, DeviceListMalformed) {
  {  // name not terminated inside the data
    Reply r;
    PutName(r, 312, {253, 0}, "abcdefgh", 0, std::nullopt, false);
    r.End(312 + 12 + 4);
    auto s = DecodeDeviceList(*r.Parse());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(s.status().message(), HasSubstr("not NUL-terminated"));
  }
  {  // next beyond the data
    Reply r;
    size_t end = PutName(r, 312, {253, 0}, "a", 4000, std::nullopt);
    r.End(end);
    EXPECT_THAT(DecodeDeviceList(*r.Parse()).status().message(), HasSubstr("outside the data"));
  }
  {  // next not 8-aligned
    Reply r;
    PutName(r, 312, {253, 0}, "a", 20, std::nullopt);
    r.End(400);
    EXPECT_THAT(DecodeDeviceList(*r.Parse()).status().message(), HasSubstr("unaligned"));
  }
  {  // record header cut short
    Reply r;
    r.Put<uint64_t>(312, 0xfd00);
    r.End(312 + 8);
    EXPECT_EQ(DecodeDeviceList(*r.Parse()).status().code(), absl::StatusCode::kDataLoss);
  }
  {  // uuid flag but the uuid runs off the end
    Reply r;
    size_t end = PutName(r, 312, {253, 0}, "a", 0, std::string("0123456789"));
    r.End(end - 8);
    EXPECT_EQ(DecodeDeviceList(*r.Parse()).status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(WireDecode, ResponseHeaderChecks) {
  Buffer tiny(100);
  EXPECT_THAT(ParseResponse(tiny.bytes()).status().message(), HasSubstr("shorter than its header"));
  Reply r;
  r.h()->data_start = 100;
  EXPECT_THAT(r.Parse().status().message(), HasSubstr("data_start"));
  Reply r2(1024);
  r2.h()->data_start = 2000;
  r2.h()->data_size = 4000;  // beyond the buffer: clamped, then data_start is outside
  EXPECT_FALSE(r2.Parse().ok());
  // Header-only replies: the kernel copies back offsetof(dm_ioctl, data).
  Reply hdr;
  hdr.h()->data_size = offsetof(struct dm_ioctl, data);
  auto p = hdr.Parse();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->data_end, p->data_start);
  EXPECT_TRUE(DecodeTargets(*p)->empty());
  EXPECT_TRUE(DecodeDeviceList(*p)->empty());
  EXPECT_FALSE(DecodeDeps(*p).ok());
}

TEST(WireDecode, Deps) {
  Reply r;
  r.Put<uint32_t>(312, 2);
  r.Put<uint64_t>(320, DevNum{7, 0}.ToKernel());
  r.Put<uint64_t>(328, DevNum{259, 300}.ToKernel());
  r.End(336);
  auto deps = DecodeDeps(*r.Parse());
  ASSERT_TRUE(deps.ok()) << deps.status();
  EXPECT_THAT(*deps, ElementsAre(DevNum{7, 0}, DevNum{259, 300}));

  Reply bad;
  bad.Put<uint32_t>(312, 1000000);
  bad.End(336);
  EXPECT_THAT(DecodeDeps(*bad.Parse()).status().message(), HasSubstr("claims 1000000"));
  Reply cut;
  cut.End(316);
  EXPECT_EQ(DecodeDeps(*cut.Parse()).status().code(), absl::StatusCode::kDataLoss);
}

TEST(WireDecode, Versions) {
  Reply r;
  size_t a = 312;
  r.Put<uint32_t>(a + 4, 1);
  r.Put<uint32_t>(a + 8, 23);
  r.Put<uint32_t>(a + 12, 0);
  r.PutStr(a + 16, "thin-pool");
  size_t b = Align8(a + 16 + 10);
  r.Put<uint32_t>(a, static_cast<uint32_t>(b - a));
  r.Put<uint32_t>(b + 4, 1);
  r.Put<uint32_t>(b + 8, 4);
  r.Put<uint32_t>(b + 12, 0);
  r.PutStr(b + 16, "linear");
  r.End(Align8(b + 16 + 7));
  auto v = DecodeVersions(*r.Parse());
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 2u);
  EXPECT_EQ((*v)[0].name, "thin-pool");
  EXPECT_EQ((*v)[0].version, (Version{1, 23, 0}));
  EXPECT_EQ((*v)[1].name, "linear");

  Reply cut;
  cut.Put<uint32_t>(312, 0);
  cut.PutStr(312 + 16, "truncated-name");
  cut.End(312 + 20);
  EXPECT_EQ(DecodeVersions(*cut.Parse()).status().code(), absl::StatusCode::kDataLoss);
  Reply loop;
  loop.Put<uint32_t>(312, 8);  // next smaller than a record
  loop.End(400);
  EXPECT_FALSE(DecodeVersions(*loop.Parse()).ok());
}

// Status results: next is relative to the FIRST spec.
TEST(WireDecode, TargetsNextRelativeToFirstSpec) {
  Reply r;
  const size_t first = 312;
  r.h()->target_count = 2;
  r.Put<uint64_t>(first, 0);
  r.Put<uint64_t>(first + 8, 100);
  r.Put<uint32_t>(first + 20, 48);
  r.PutStr(first + 24, "linear");
  r.PutStr(first + 40, "7:0 0");
  const size_t second = first + 48;
  r.Put<uint64_t>(second, 100);
  r.Put<uint64_t>(second + 8, 28);
  r.Put<uint32_t>(second + 20, 48 + 48);  // from the first spec
  r.PutStr(second + 24, "thin-pool");
  r.PutStr(second + 40, "0 1/2 3/4 - rw");
  r.End(second + 40 + 15);
  auto t = DecodeTargets(*r.Parse());
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[0].type, "linear");
  EXPECT_EQ((*t)[0].params, "7:0 0");
  EXPECT_EQ((*t)[1].start, 100u);
  EXPECT_EQ((*t)[1].length, 28u);
  EXPECT_EQ((*t)[1].type, "thin-pool");
  EXPECT_EQ((*t)[1].params, "0 1/2 3/4 - rw");
}

TEST(WireDecode, TargetsMalformed) {
  {  // count claims more than fits
    Reply r;
    r.h()->target_count = 1000;
    r.End(312 + 48);
    EXPECT_THAT(DecodeTargets(*r.Parse()).status().message(), HasSubstr("cannot fit"));
  }
  {  // next 0 with more targets to come: would loop
    Reply r;
    r.h()->target_count = 2;
    r.PutStr(312 + 24, "zero");
    r.End(312 + 200);
    EXPECT_THAT(DecodeTargets(*r.Parse()).status().message(), HasSubstr("next 0"));
  }
  {  // params run off the end
    Reply r;
    r.h()->target_count = 1;
    r.PutStr(312 + 24, "zero");
    r.PutStr(312 + 40, "0123456789");
    r.End(312 + 45);
    EXPECT_EQ(DecodeTargets(*r.Parse()).status().code(), absl::StatusCode::kDataLoss);
  }
  {  // target type fills all 16 bytes (no NUL): read at most 16
    Reply r;
    r.h()->target_count = 1;
    std::memset(r.h() + 1, 0, 8);
    for (int i = 0; i < 16; ++i) r.Put<char>(312 + 24 + i, 'x');
    r.End(312 + 41);
    auto t = DecodeTargets(*r.Parse());
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)[0].type, std::string(16, 'x'));
  }
  {  // no table: zero targets
    Reply r;
    EXPECT_TRUE(DecodeTargets(*r.Parse())->empty());
  }
}

TEST(WireDecode, MessageResult) {
  Reply r;
  r.PutStr(312, "answer");
  r.End(319);
  EXPECT_EQ(*DecodeMessageResult(*r.Parse()), "");  // no DM_DATA_OUT_FLAG
  r.h()->flags = DM_DATA_OUT_FLAG;
  EXPECT_EQ(*DecodeMessageResult(*r.Parse()), "answer");
  r.End(315);
  EXPECT_FALSE(DecodeMessageResult(*r.Parse()).ok());
}

TEST(WireDecode, DescribeHeader) {
  Reply r;
  std::strcpy(r.h()->name, "dev0");
  r.h()->dev = DevNum{253, 4}.ToKernel();
  r.h()->open_count = 2;
  std::string d = DescribeHeader(*r.h());
  EXPECT_THAT(d, HasSubstr("version 4.47.0"));
  EXPECT_THAT(d, HasSubstr("dev 253:4"));
  EXPECT_THAT(d, HasSubstr("open_count 2"));
  EXPECT_THAT(d, HasSubstr("name 'dev0'"));
}

}  // namespace
}  // namespace dm::wire
