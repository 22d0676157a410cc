// Unit tests of the archive path: applying layer tarballs into a plain
// directory (no privileges needed: owners are not preserved here; device
// nodes, owners and overlay whiteouts are in tests/host/graph_archive_test).
#include "graph/archive.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <random>
#include <string>

#include "base/unique_fd.h"
#include "graph/archive/internal.h"
#include "graph/digest.h"
#include "graph/fsutil.h"
#include "gtest/gtest.h"
#include "tests/support/graph_tar.h"
#include "tests/support/scratch_dir.h"

namespace graph {
namespace {

using testsupport::BuildTar;
using testsupport::ReadFileOrEmpty;
using testsupport::ScratchDir;
using testsupport::TarEntry;
using testsupport::TarFilter;

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(dir_.Sub("layer").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dir_.Sub("outside").c_str(), 0755), 0);
    testsupport::WriteFileOrDie(dir_.Sub("outside/keep"), "precious");
    layer_ = dir_.Sub("layer");
    root_.reset(::open(layer_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root_.valid());
    outside_before_ = testsupport::TreeFingerprint(dir_.Sub("outside"));
  }
  void TearDown() override {
    // Nothing may ever be written next to the layer.
    EXPECT_EQ(testsupport::TreeFingerprint(dir_.Sub("outside")), outside_before_);
  }

  absl::StatusOr<ApplyDiffResult> Apply(const std::string& tar,
                                        WhiteoutFormat w = WhiteoutFormat::kDelete) {
    StringSource src(tar);
    ApplyOptions o;
    o.whiteouts = w;
    o.preserve_owners = geteuid() == 0;
    return ApplyLayer(root_.get(), src, o);
  }

  std::string Read(const std::string& rel, bool* ok = nullptr) {
    return ReadFileOrEmpty(layer_ + "/" + rel, ok);
  }
  bool Exists(const std::string& rel) {
    struct stat st;
    return ::lstat((layer_ + "/" + rel).c_str(), &st) == 0;
  }
  struct stat Stat(const std::string& rel) {
    struct stat st = {};
    EXPECT_EQ(::lstat((layer_ + "/" + rel).c_str(), &st), 0) << rel;
    return st;
  }

  ScratchDir dir_{"archive"};
  std::string layer_;
  base::UniqueFd root_;
  std::string outside_before_;
};

TEST(CleanPathTest, Normalises) {
  EXPECT_EQ(*archive_internal::CleanPath("./a//b/./c/"), "a/b/c");
  EXPECT_EQ(*archive_internal::CleanPath("/etc/passwd"), "etc/passwd");
  EXPECT_EQ(*archive_internal::CleanPath("./"), "");
  EXPECT_FALSE(archive_internal::CleanPath("a/../b").ok());
  EXPECT_FALSE(archive_internal::CleanPath("..").ok());
  EXPECT_FALSE(archive_internal::CleanPath(std::string(300, 'x')).ok());
  EXPECT_FALSE(archive_internal::CleanPath(std::string(5000, '/')).ok());
}

TEST(CleanPathTest, SymlinkTargets) {
  EXPECT_TRUE(archive_internal::CheckSymlinkTarget("usr/bin", "../lib/x").ok());
  EXPECT_TRUE(archive_internal::CheckSymlinkTarget("usr/bin", "../../x").ok());
  EXPECT_FALSE(archive_internal::CheckSymlinkTarget("usr/bin", "../../../x").ok());
  EXPECT_FALSE(archive_internal::CheckSymlinkTarget("", "..").ok());
  EXPECT_TRUE(archive_internal::CheckSymlinkTarget("", "/etc").ok());
  EXPECT_TRUE(archive_internal::CheckSymlinkTarget("a", "./b/../c").ok());
}

TEST(DigestTest, KnownVector) {
  EXPECT_EQ(Sha256Digest(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(IsSha256Digest(Sha256Digest("x")));
  EXPECT_FALSE(IsSha256Digest("sha256:XYZ"));
}

TEST_F(ArchiveTest, AppliesFilesDirsLinksModesAndTimes) {
  std::vector<TarEntry> entries;
  entries.push_back({.path = "etc/", .type = '5', .mode = 0755, .mtime = 1000});
  entries.push_back({.path = "etc/hostname", .data = "box\n", .mode = 0644, .mtime = 2000});
  entries.push_back({.path = "bin/su", .data = "ELF", .mode = 04755, .mtime = 3000});
  entries.push_back({.path = "tmp/", .type = '5', .mode = 01777, .mtime = 4000});
  entries.push_back({.path = "etc/alias", .type = '2', .link = "hostname"});
  entries.push_back({.path = "etc/abs", .type = '2', .link = "/usr/lib/os-release"});
  entries.push_back({.path = "etc/hard", .type = '1', .link = "etc/hostname"});
  entries.push_back({.path = "fifo", .type = '6', .mode = 0600});
  entries.push_back({.path = "private/", .type = '5', .mode = 0500, .mtime = 5000});
  entries.push_back({.path = "private/inner", .data = "x", .mode = 0400});
  std::string tar = BuildTar(entries);
  auto r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->diff_id, Sha256Digest(tar));
  EXPECT_EQ(r->tar_bytes, tar.size());
  EXPECT_EQ(r->size, 4 + 3 + 1);

  EXPECT_EQ(Read("etc/hostname"), "box\n");
  EXPECT_EQ(Stat("bin/su").st_mode & 07777, 04755u);
  EXPECT_EQ(Stat("tmp").st_mode & 07777, 01777u);
  EXPECT_TRUE(S_ISDIR(Stat("tmp").st_mode));
  EXPECT_EQ(Stat("etc/hostname").st_mtime, 2000);
  // Directory times are set after their children were written.
  EXPECT_EQ(Stat("etc").st_mtime, 1000);
  EXPECT_EQ(Stat("private").st_mtime, 5000);
  EXPECT_EQ(Stat("private").st_mode & 07777, 0500u);
  EXPECT_TRUE(S_ISLNK(Stat("etc/alias").st_mode));
  char buf[256];
  ssize_t n = ::readlink((layer_ + "/etc/abs").c_str(), buf, sizeof buf);
  EXPECT_EQ(std::string(buf, n > 0 ? n : 0), "/usr/lib/os-release");
  EXPECT_EQ(Stat("etc/hard").st_ino, Stat("etc/hostname").st_ino);
  EXPECT_EQ(Stat("etc/hostname").st_nlink, 2u);
  EXPECT_TRUE(S_ISFIFO(Stat("fifo").st_mode));
  // Implicit parent (bin/ had no entry) is created 0755.
  EXPECT_EQ(Stat("bin").st_mode & 07777, 0755u);
}

TEST_F(ArchiveTest, DiffIdIsOverTheUncompressedStream) {
  std::vector<TarEntry> entries = {{.path = "a", .data = std::string(100000, 'a')},
                                   {.path = "b/c", .data = "c"}};
  std::string plain = BuildTar(entries);
  const std::string want = Sha256Digest(plain);
  for (TarFilter f : {TarFilter::kGzip, TarFilter::kZstd}) {
    ScratchDir d("archive-z");
    base::UniqueFd root(::open(d.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    std::string compressed = BuildTar(entries, f);
    ASSERT_NE(compressed, plain);
    StringSource src(compressed);
    ApplyOptions o;
    o.preserve_owners = false;
    auto r = ApplyLayer(root.get(), src, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->diff_id, want);
    EXPECT_EQ(r->tar_bytes, plain.size());
    EXPECT_EQ(ReadFileOrEmpty(d.path() + "/a"), std::string(100000, 'a'));
  }
}

TEST_F(ArchiveTest, DiffIdIncludesTrailingPadding) {
  // GNU tar pads to 10 KiB records: the bytes after the end-of-archive
  // blocks are part of the diff id.
  std::string tar = BuildTar({{.path = "a", .data = "x"}});
  tar.resize(10240, '\0');
  auto r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->diff_id, Sha256Digest(tar));
  EXPECT_EQ(r->tar_bytes, 10240u);
}

TEST_F(ArchiveTest, SparseFilesKeepTheirHoles) {
  TarEntry e{.path = "sparse", .data = std::string(4096, 'A') + std::string(4096, 'B')};
  e.sparse_size = 64 << 20;
  e.extents = {{0, 4096}, {32 << 20, 4096}};
  auto r = Apply(BuildTar({e}));
  ASSERT_TRUE(r.ok()) << r.status();
  struct stat st = Stat("sparse");
  EXPECT_EQ(st.st_size, 64 << 20);
  EXPECT_LT(st.st_blocks * 512, 1 << 20) << "holes were filled";
  std::string content = Read("sparse");
  EXPECT_TRUE(content.substr(0, 4096) == std::string(4096, 'A'));
  EXPECT_TRUE(content.substr(32 << 20, 4096) == std::string(4096, 'B'));
  EXPECT_EQ(content[1 << 20], '\0');
}

TEST_F(ArchiveTest, DiffKeepsSparseFilesSparse) {
  TarEntry e{.path = "sparse", .data = std::string(4096, 'A') + std::string(4096, 'B')};
  e.sparse_size = 64 << 20;
  e.extents = {{0, 4096}, {32 << 20, 4096}};
  // A file that is all hole (libarchive writes it dense: kept small here).
  TarEntry hole{.path = "allhole", .data = ""};
  hole.sparse_size = 16 << 10;
  hole.extents = {};
  ASSERT_TRUE(Apply(BuildTar({e, hole})).ok());
  std::string tar;
  StringSink sink(&tar);
  auto d = WriteLayerTree(root_.get(), WhiteoutFormat::kDelete, sink);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_LT(tar.size(), 100000u) << "holes must not be written out";
  ScratchDir again("archive-sparse");
  base::UniqueFd root(::open(again.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  StringSource src(tar);
  ApplyOptions o;
  o.preserve_owners = false;
  ASSERT_TRUE(ApplyLayer(root.get(), src, o).ok());
  struct stat st;
  ASSERT_EQ(::stat((again.path() + "/sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 20);
  EXPECT_LT(st.st_blocks * 512, 1 << 20);
  EXPECT_TRUE(ReadFileOrEmpty(again.path() + "/sparse") == Read("sparse"));
  ASSERT_EQ(::stat((again.path() + "/allhole").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 16 << 10);
}

TEST_F(ArchiveTest, XattrsAreRestoredButOverlayOnesAreNot) {
  TarEntry e{.path = "f", .data = "x"};
  e.xattrs["user.note"] = "hello";
  e.xattrs["trusted.overlay.redirect"] = "/elsewhere";
  auto r = Apply(BuildTar({e}));
  ASSERT_TRUE(r.ok()) << r.status();
  char buf[64];
  ssize_t n = ::getxattr((layer_ + "/f").c_str(), "user.note", buf, sizeof buf);
  ASSERT_EQ(n, 5) << "user xattrs unsupported here?";
  EXPECT_EQ(std::string(buf, 5), "hello");
  EXPECT_LT(::getxattr((layer_ + "/f").c_str(), "trusted.overlay.redirect", buf, sizeof buf), 0);
}

TEST_F(ArchiveTest, DeleteWhiteoutsRemoveLowerFilesOnly) {
  // The layer already holds its parent's files (vfs/btrfs).
  ASSERT_TRUE(Apply(BuildTar({{.path = "a/old1", .data = "1"},
                              {.path = "a/old2", .data = "2"},
                              {.path = "a/sub/deep", .data = "3"},
                              {.path = "b/gone", .data = "4"},
                              {.path = "c", .data = "5"},
                              {.path = "d/keep", .data = "6"}}))
                  .ok());
  auto r = Apply(BuildTar({{.path = "a/new", .data = "n"},
                           {.path = "a/.wh..wh..opq", .data = ""},
                           {.path = "a/sub/", .type = '5', .mode = 0755},
                           {.path = "a/sub/fresh", .data = "f"},
                           {.path = "b/.wh.gone", .data = ""},
                           {.path = ".wh.c", .data = ""},
                           {.path = "d/.wh.missing", .data = ""},
                           {.path = "e/.wh.nothing-below", .data = ""}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Exists("a/new")) << "same-layer entry kept despite a later opaque marker";
  EXPECT_FALSE(Exists("a/old1"));
  EXPECT_FALSE(Exists("a/old2"));
  EXPECT_TRUE(Exists("a/sub/fresh"));
  EXPECT_FALSE(Exists("a/sub/deep")) << "opaque hides the whole lower subtree";
  EXPECT_FALSE(Exists("b/gone"));
  EXPECT_TRUE(Exists("b"));
  EXPECT_FALSE(Exists("c"));
  EXPECT_TRUE(Exists("d/keep"));
  EXPECT_FALSE(Exists("a/.wh..wh..opq"));
  EXPECT_FALSE(Exists("b/.wh.gone"));
}

TEST_F(ArchiveTest, WhiteoutDoesNotHideTheSameLayersEntry) {
  auto r = Apply(BuildTar({{.path = "x", .data = "mine"}, {.path = ".wh.x", .data = ""}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Read("x"), "mine");
}

TEST_F(ArchiveTest, AufsKeepsWhiteoutFiles) {
  auto r = Apply(BuildTar({{.path = "a/.wh.gone", .data = ""}, {.path = "a/.wh..wh..opq", .data = ""}}),
                 WhiteoutFormat::kAufs);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Exists("a/.wh.gone"));
  EXPECT_TRUE(Exists("a/.wh..wh..opq"));
}

TEST_F(ArchiveTest, ReplacesFilesAndDirectories) {
  ASSERT_TRUE(Apply(BuildTar({{.path = "d/x", .data = "1"}, {.path = "f", .data = "old"}})).ok());
  auto r = Apply(BuildTar({{.path = "d", .data = "now a file"}, {.path = "f/", .type = '5'},
                           {.path = "f/inside", .data = "y"}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Read("d"), "now a file");
  EXPECT_EQ(Read("f/inside"), "y");
}

// ------------------------------------------------------------- hostile ---

TEST_F(ArchiveTest, RejectsDotDotTraversal) {
  for (std::string p : {"../evil", "a/../../evil", "./../outside/keep", "a/b/../../../x"}) {
    auto r = Apply(BuildTar({{.path = p, .data = "pwned"}}));
    EXPECT_FALSE(r.ok()) << p;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(".."), absl::string_view::npos) << r.status();
  }
}

TEST_F(ArchiveTest, AbsolutePathsAreRootedInTheLayer) {
  std::string outside = dir_.Sub("outside/abs");
  auto r = Apply(BuildTar({{.path = outside, .data = "rooted"}}));
  ASSERT_TRUE(r.ok()) << r.status();
  bool ok = false;
  EXPECT_EQ(Read(outside.substr(1), &ok), "rooted");
  EXPECT_TRUE(ok);
}

TEST_F(ArchiveTest, RejectsEscapingRelativeSymlink) {
  auto r = Apply(BuildTar({{.path = "a/link", .type = '2', .link = "../../outside"},
                           {.path = "a/link/keep", .data = "pwned"}}));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("leads out of the layer"), absl::string_view::npos) << r.status();
}

TEST_F(ArchiveTest, WritesThroughAbsoluteSymlinkStayInside) {
  // "esc" points at the real outside directory by absolute path; writing
  // through it must resolve inside the layer (where that path does not
  // exist) — an error, and nothing written outside.
  auto r = Apply(BuildTar({{.path = "esc", .type = '2', .link = dir_.Sub("outside")},
                           {.path = "esc/keep", .data = "pwned"},
                           {.path = "esc/new", .data = "pwned"}}));
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(ReadFileOrEmpty(dir_.Sub("outside/keep")), "precious");
  // A symlink to "/" followed by a write lands in the layer's own root.
  ScratchDir d("archive-root");
  base::UniqueFd root(::open(d.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  std::string tar = BuildTar({{.path = "rootlink", .type = '2', .link = "/"},
                              {.path = "rootlink/etc/x", .data = "inside"}});
  StringSource src(tar);
  ApplyOptions o;
  o.preserve_owners = false;
  auto r2 = ApplyLayer(root.get(), src, o);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(ReadFileOrEmpty(d.path() + "/etc/x"), "inside");
}

TEST_F(ArchiveTest, RejectsHardlinksOutOfTheLayer) {
  for (std::string target : {"/etc/passwd", "../outside/keep", "etc/shadow"}) {
    auto r = Apply(BuildTar({{.path = "pw", .type = '1', .link = target}}));
    EXPECT_FALSE(r.ok()) << target;
  }
  // Through an absolute symlink to the outside directory: resolved in the layer.
  auto r = Apply(BuildTar({{.path = "esc", .type = '2', .link = dir_.Sub("outside")},
                           {.path = "pw", .type = '1', .link = "esc/keep"}}));
  EXPECT_FALSE(r.ok());
  struct stat st;
  ASSERT_EQ(::stat(dir_.Sub("outside/keep").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
}

TEST_F(ArchiveTest, RejectsAbsurdSizes) {
  // Declared 8 GiB, no data: truncated.
  std::string tar = testsupport::RawHeader("big", '0', "77777777777") + std::string(512, 'x');
  auto r = Apply(tar);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  // pax size of 2^60: over the file size limit before anything is written.
  tar = testsupport::RawPaxHeader({{"size", "1152921504606846976"}}) +
        testsupport::RawHeader("huge", '0', "00000000000") + testsupport::TarEnd();
  r = Apply(tar);
  EXPECT_NE(r.status().message().find("exceeds the limit"), absl::string_view::npos) << r.status();
  EXPECT_FALSE(Exists("huge"));
}

TEST_F(ArchiveTest, RejectsTruncatedStreams) {
  std::string tar = BuildTar({{.path = "a", .data = std::string(100000, 'a')}, {.path = "b", .data = "b"}});
  for (size_t cut : {size_t{100}, size_t{512}, size_t{50000}, tar.size() - 1100}) {
    ScratchDir d("archive-trunc");
    base::UniqueFd root(::open(d.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    std::string part = tar.substr(0, cut);
    StringSource src(part);
    ApplyOptions o;
    o.preserve_owners = false;
    auto r = ApplyLayer(root.get(), src, o);
    EXPECT_FALSE(r.ok()) << "cut at " << cut;
    if (cut == 50000) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    }
  }
  std::string gz = BuildTar({{.path = "a", .data = std::string(100000, 'q')}}, TarFilter::kGzip);
  auto r = Apply(gz.substr(0, gz.size() / 2));
  EXPECT_FALSE(r.ok());
}

// One gzip member of `data` (zlib), level 1 so random data stays in stored
// blocks: a flipped byte there inflates without error to other content, and
// only the trailer's CRC-32 tells.
std::string GzipMember(const std::string& data) {
  z_stream z = {};
  EXPECT_EQ(deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST_F(ArchiveTest, EveryCodecChecksItsIntegrity) {
  std::mt19937 rng(42);
  std::string noise(200000, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  std::string tar = BuildTar({{.path = "a", .data = noise}, {.path = "b", .data = "b"}});
  std::string gz = GzipMember(tar);
  auto apply = [&](const std::string& stream) {
    ScratchDir d("archive-crc");
    base::UniqueFd root(::open(d.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    StringSource src(stream);
    ApplyOptions o;
    o.preserve_owners = false;
    return ApplyLayer(root.get(), src, o);
  };
  auto good = apply(gz);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->diff_id, Sha256Digest(tar));
  // Several members (pigz, concatenated streams) and gzip(1)'s zero padding.
  auto multi = apply(GzipMember(tar.substr(0, 70000)) + GzipMember(tar.substr(70000)) + std::string(512, '\0'));
  ASSERT_TRUE(multi.ok()) << multi.status();
  EXPECT_EQ(multi->diff_id, good->diff_id);
  // A flipped byte in the deflate data, the CRC-32 or the length: gzip -t
  // fails on each, so must the import.
  for (size_t at : {gz.size() / 2, gz.size() - 6, gz.size() - 2}) {
    std::string bad = gz;
    bad[at] = static_cast<char>(bad[at] ^ 0x5a);
    auto r = apply(bad);
    ASSERT_FALSE(r.ok()) << "flipped byte at " << at << " of " << gz.size();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_NE(r.status().message().find("gzip"), absl::string_view::npos) << r.status();
  }
  auto trailing = apply(gz + "garbage");
  EXPECT_FALSE(trailing.ok()) << "bytes after the last gzip member are not padding";
  EXPECT_FALSE(apply(gz.substr(0, gz.size() - 4)).ok()) << "a cut trailer";
}

TEST_F(ArchiveTest, RejectsGarbageAndEmptyStreams) {
  EXPECT_FALSE(Apply("").ok());
  EXPECT_FALSE(Apply(std::string(4096, 'z')).ok());
  EXPECT_FALSE(Apply(testsupport::RawHeader("a", '0', "00000000001") + "x").ok());
}

TEST_F(ArchiveTest, RejectsHugeHeaderFields) {
  // A 10,000-byte path in a pax header.
  std::string tar = testsupport::RawPaxHeader({{"path", std::string(10000, 'p')}}) +
                    testsupport::RawHeader("short", '0', "00000000000") + testsupport::TarEnd();
  auto r = Apply(tar);
  EXPECT_NE(r.status().message().find("exceeds 4096"), absl::string_view::npos) << r.status();
  EXPECT_LT(r.status().message().size(), 600u) << "hostile paths are cut short in messages";
  // A pax header that claims 1 GiB.
  tar = testsupport::RawHeader("PaxHeaders/x", 'x', "10000000000") + std::string(512, '9');
  EXPECT_FALSE(Apply(tar).ok());
  // A 4 KiB symlink target.
  r = Apply(BuildTar({{.path = "l", .type = '2', .link = std::string(5000, 'a')}}));
  EXPECT_FALSE(r.ok());
}

TEST_F(ArchiveTest, RemoveTreeCleansAFailedLayer) {
  auto r = Apply(BuildTar({{.path = "a/b/c", .data = "1"}, {.path = "../x", .data = "2"}}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Exists("a/b/c"));
  root_.reset();
  ASSERT_TRUE(RemoveTree(layer_).ok());
  struct stat st;
  EXPECT_NE(::lstat(layer_.c_str(), &st), 0);
  EXPECT_EQ(ReadFileOrEmpty(dir_.Sub("outside/keep")), "precious");
}

}  // namespace
}  // namespace graph
