// Test support for the graph archive path: build layer tarballs in memory
// (well-formed ones with libarchive, hostile ones byte by byte), list what a
// tarball holds, and fingerprint directory trees.
#ifndef DMTHIN_TESTS_SUPPORT_GRAPH_TAR_H_
#define DMTHIN_TESTS_SUPPORT_GRAPH_TAR_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace testsupport {

struct TarEntry {
  std::string path;
  // '0' file, '5' dir, '2' symlink, '1' hardlink, '3' char, '4' block, '6' fifo
  char type = '0';
  std::string data{};  // file content
  std::string link{};  // symlink / hardlink target
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 1700000000;
  unsigned major = 0, minor = 0;
  std::map<std::string, std::string> xattrs{};
  // Sparse file: logical size and data extents {offset, length} (data is
  // the concatenation of the extents' bytes).
  int64_t sparse_size = -1;
  std::vector<std::pair<int64_t, int64_t>> extents{};
};

enum class TarFilter { kNone, kGzip, kZstd };

// A pax tar of `entries` (libarchive writer), optionally compressed.
std::string BuildTar(const std::vector<TarEntry>& entries,
                     TarFilter filter = TarFilter::kNone);

// One raw 512-byte ustar header; `size_field` is written verbatim (octal
// text, up to 11 chars) so tests can lie about sizes.
std::string RawHeader(const std::string& name, char typeflag,
                      const std::string& size_field,
                      const std::string& linkname = "");
// A pax extended header block carrying `records` ("key=value" pairs).
std::string RawPaxHeader(const std::map<std::string, std::string>& records);
// The entries of an (uncompressed) tar in order: (path, hardlink target,
// "" when not a hardlink).
std::vector<std::pair<std::string, std::string>> TarEntryNames(const std::string& tar);

// 1024 zero bytes.
std::string TarEnd();
// `data` padded with zeros to a multiple of 512.
std::string Pad512(const std::string& data);

// Reads a whole file ("" with ok=false when missing).
std::string ReadFileOrEmpty(const std::string& path, bool* ok = nullptr);
void WriteFileOrDie(const std::string& path, const std::string& data);

// Every path under `dir` with type/mode/size/content hash: a fingerprint to
// prove a directory was not touched. Walks the tree with its own readdir and
// lstat, not graph's ListDirBeneath or the drivers' listings: an oracle built
// from the code under test would share its bugs and could not fail on them.
// With `links_and_xattrs`, each non-directory's link count and every
// entry's extended attributes (name=value, sorted) are part of it too.
std::string TreeFingerprint(const std::string& dir, bool links_and_xattrs = false);
// "" when equal, else the first differing line of two fingerprints.
std::string FirstDifference(const std::string& a, const std::string& b);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_GRAPH_TAR_H_
