// ApplyLayer: OCI layer tar → layer directory.
//
// Reading is two libarchive readers stacked:
//   ByteSource → [outer: decompression filters + "raw" format]
//              → (sha256 over the decompressed bytes)
//              → [inner: tar format] → entries
// gzip is the exception: libarchive's gzip reader does not verify the CRC-32
// and length in each member's trailer (a flipped byte in deflate data would
// import as different content), so gzip streams are inflated with zlib,
// which checks both, and read by the tar reader like a plain tar.
// The inner reader's read callback pulls decompressed blocks from the outer
// reader and hashes them as they pass, so the diff id is computed over the
// uncompressed tar exactly as libarchive consumes it; what the tar reader
// does not consume (bytes after the end-of-archive blocks) is drained into
// the hash at the end.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <mutex>
#include <thread>
#include <utility>
#include <set>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/archive/internal.h"
#include "graph/digest.h"
#include "graph/fsutil.h"

namespace graph {
namespace {

constexpr uint64_t kInRoot = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
constexpr size_t kReadBlock = 1 << 20;

int Openat2(int dirfd, const std::string& path, int flags, uint64_t resolve) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = resolve;
  return static_cast<int>(
      syscall(SYS_openat2, dirfd, path.empty() ? "." : path.c_str(), &how, sizeof how));
}

// A path for an error message: escaped, and cut short when hostile input
// made it huge.
std::string Quote(absl::string_view s) {
  if (s.size() > 200) {
    return absl::StrCat("\"", absl::CHexEscape(s.substr(0, 200)), "...\" (", s.size(), " bytes)");
  }
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

// An uninitialised, page-aligned heap buffer: std::vector<char> would zero
// (and fault in) 7 MiB of blocks for every layer, however small. Page
// alignment matters for speed: a 1 MiB `new char[]` is a fresh mmap whose
// data starts 16 bytes into the page, so every read() copied page-cache pages
// to an address 16 bytes past a page boundary (4K aliasing in the kernel's
// rep movsb: the first import in a process read 210 MB ~4x slower, ~85 ms of
// CPU, than a later one whose buffers happened to land elsewhere). GNU tar
// page-aligns its record buffer for the same reason.
class RawBuffer {
 public:
  static constexpr std::align_val_t kAlign{4096};
  explicit RawBuffer(size_t n) : data_(static_cast<char*>(::operator new[](n, kAlign))), size_(n) {}
  char* data() { return data_.get(); }
  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(char* p) const { ::operator delete[](p, kAlign); }
  };
  std::unique_ptr<char[], Free> data_;
  size_t size_;
};

// The two stacked readers, with the outer one (read, decompress, hash) on
// its own thread so that hashing and decompression overlap with the file
// system work of the main thread. Blocks travel through a small pool of
// buffers: `free_` → producer fills and hashes → `full_` → the tar reader
// holds one until its next read callback → back to `free_`.
class LayerReader {
 public:
  explicit LayerReader(ByteSource& source) : source_(source), src_buf_(kReadBlock) {}
  ~LayerReader() {
    Stop();
    if (inner_ != nullptr) archive_read_free(inner_);
    if (outer_ != nullptr) archive_read_free(outer_);
  }

  absl::Status Open() {
    inner_ = archive_read_new();
    if (inner_ == nullptr) return absl::ResourceExhaustedError("archive_read_new");
    // Look at the first bytes: a plain tar skips libarchive's filter layer
    // (and a copy) entirely.
    while (prefetched_ < 6) {
      absl::StatusOr<size_t> n = source_.Read(src_buf_.data() + prefetched_, src_buf_.size() - prefetched_);
      if (!n.ok()) return base::Annotate(n.status(), "reading layer stream");
      if (*n == 0) break;
      prefetched_ += *n;
    }
    if (prefetched_ == 0) return absl::InvalidArgumentError("layer stream is empty");
    const unsigned char* m = reinterpret_cast<const unsigned char*>(src_buf_.data());
    gzip_ = prefetched_ >= 2 && m[0] == 0x1f && m[1] == 0x8b;
    bool compressed = prefetched_ >= 6 &&
                      ((m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) ||  // zstd
                       (m[0] == 0xfd && m[1] == '7' && m[2] == 'z' && m[3] == 'X' && m[4] == 'Z') ||  // xz
                       (m[0] == 'B' && m[1] == 'Z' && m[2] == 'h'));                     // bzip2
    if (compressed) {
      outer_ = archive_read_new();
      if (outer_ == nullptr) return absl::ResourceExhaustedError("archive_read_new");
      // Decompression: OCI allows gzip (zlib, above) and zstd; xz and bzip2
      // are cheap to accept. Each checks its own integrity data. Never the "program" filter (no external processes).
      archive_read_support_filter_zstd(outer_);
      archive_read_support_filter_xz(outer_);
      archive_read_support_filter_bzip2(outer_);
      archive_read_support_format_raw(outer_);
      if (archive_read_open(outer_, this, nullptr, &LayerReader::OuterRead, nullptr) != ARCHIVE_OK) {
        return OuterError("opening layer stream");
      }
      struct archive_entry* raw = nullptr;
      int r = archive_read_next_header(outer_, &raw);
      if (r == ARCHIVE_EOF) return absl::InvalidArgumentError("layer stream is empty");
      if (r < ARCHIVE_WARN) return OuterError("reading layer stream");
    }

    for (int i = 0; i < kBuffers; ++i) {
      pool_.emplace_back(kReadBlock);
      free_.push_back(i);
    }
    producer_ = std::thread([this] { Produce(); });

    archive_read_support_format_tar(inner_);
    if (archive_read_open(inner_, this, nullptr, &LayerReader::InnerRead, nullptr) != ARCHIVE_OK) {
      return Error(inner_, "opening tar stream");
    }
    return absl::OkStatus();
  }

  struct archive* tar() { return inner_; }

  // Lets the producer hash what the tar reader left unread, then waits for it.
  absl::Status Drain() {
    for (;;) {
      int idx = NextFull();
      if (idx < 0) break;
      Release(idx);
    }
    Stop();
    if (!producer_status_.ok()) return producer_status_;
    return absl::OkStatus();
  }

  std::string Digest() { return hash_.Finish(); }
  uint64_t bytes() const { return bytes_; }

  // A status for a libarchive failure of the tar reader, preferring the
  // producer's error (source or decompression) when there is one.
  absl::Status Error(struct archive* a, absl::string_view what) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!producer_status_.ok()) return base::Annotate(producer_status_, what);
    }
    const char* msg = archive_error_string(a);
    return Classify(msg, what);
  }

 private:
  static constexpr int kBuffers = 6;
  struct Block {
    explicit Block(size_t n) : data(n) {}
    RawBuffer data;
    size_t len = 0;
  };

  static absl::Status Classify(const char* msg, absl::string_view what) {
    std::string text = absl::StrCat(what, ": ", msg != nullptr ? msg : "unknown libarchive error");
    if (msg != nullptr && (absl::StrContains(msg, "runcated") || absl::StrContains(msg, "Premature end") ||
                           absl::StrContains(msg, "unexpected end") || absl::StrContains(msg, "Damaged"))) {
      return absl::DataLossError(text);
    }
    return absl::InvalidArgumentError(text);
  }

  absl::Status OuterError(absl::string_view what) {
    if (!source_status_.ok()) return base::Annotate(source_status_, what);
    return Classify(archive_error_string(outer_), what);
  }

  // A free block, or -1 when told to stop.
  int TakeFree() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !free_.empty() || stop_; });
    if (stop_) return -1;
    int idx = free_.front();
    free_.pop_front();
    return idx;
  }

  // A block the producer filled: hashed, counted and queued for the
  // consumer; an empty one goes back to the free list.
  void HashAndPush(int idx) {
    Block& blk = pool_[idx];
    if (blk.len > 0) {
      hash_.Update(blk.data.data(), blk.len);
      bytes_ += blk.len;
      PushFull(idx);
    } else {
      Release(idx);
    }
  }

  void PushFull(int idx) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      full_.push_back(idx);
    }
    cv_.notify_all();
  }

  // Plain tar: read straight into the pool's blocks and hash them there.
  absl::Status ProducePlain() {
    int idx = TakeFree();
    if (idx < 0) return absl::OkStatus();
    std::memcpy(pool_[idx].data.data(), src_buf_.data(), prefetched_);
    pool_[idx].len = prefetched_;
    for (;;) {
      Block& blk = pool_[idx];
      // Fill the block (short reads from pipes) so blocks stay large.
      bool eof = false;
      while (blk.len < blk.data.size()) {
        absl::StatusOr<size_t> n = source_.Read(blk.data.data() + blk.len, blk.data.size() - blk.len);
        if (!n.ok()) return base::Annotate(n.status(), "reading layer stream");
        if (*n == 0) {
          eof = true;
          break;
        }
        blk.len += *n;
      }
      HashAndPush(idx);
      if (eof) return absl::OkStatus();
      idx = TakeFree();
      if (idx < 0) return absl::OkStatus();
      pool_[idx].len = 0;
    }
  }

  // gzip: inflate with zlib (one or more members; trailing zero padding is
  // ignored, as gzip(1) does) into the pool's blocks and hash them there.
  // zlib verifies every member's CRC-32 and length (ISIZE).
  absl::Status ProduceGzip() {
    z_stream z = {};
    if (inflateInit2(&z, 15 + 16) != Z_OK) return absl::ResourceExhaustedError("gzip: inflateInit2");
    absl::Cleanup end = [&z] { inflateEnd(&z); };
    z.next_in = reinterpret_cast<Bytef*>(src_buf_.data());
    z.avail_in = static_cast<uInt>(prefetched_);
    bool in_member = true, eof = false;
    int idx = -1;
    auto flush = [&] {
      if (idx < 0) return;
      HashAndPush(idx);
      idx = -1;
    };
    for (;;) {
      if (z.avail_in == 0 && !eof) {
        absl::StatusOr<size_t> n = source_.Read(src_buf_.data(), src_buf_.size());
        if (!n.ok()) {
          flush();
          return base::Annotate(n.status(), "reading layer stream");
        }
        eof = *n == 0;
        z.next_in = reinterpret_cast<Bytef*>(src_buf_.data());
        z.avail_in = static_cast<uInt>(*n);
      }
      if (!in_member) {
        if (z.avail_in == 0 && eof) break;
        if (*z.next_in == 0) {  // zero padding after the last member
          ++z.next_in;
          --z.avail_in;
          continue;
        }
        if (inflateReset(&z) != Z_OK) return absl::InternalError("gzip: inflateReset");
        in_member = true;
      }
      if (z.avail_in == 0 && eof) {
        flush();
        return absl::DataLossError("gzip stream is truncated (unexpected end of data)");
      }
      if (idx < 0) {
        idx = TakeFree();
        if (idx < 0) return absl::OkStatus();  // stopped
        pool_[idx].len = 0;
      }
      Block& blk = pool_[idx];
      z.next_out = reinterpret_cast<Bytef*>(blk.data.data() + blk.len);
      z.avail_out = static_cast<uInt>(blk.data.size() - blk.len);
      int r = inflate(&z, Z_NO_FLUSH);
      blk.len = blk.data.size() - z.avail_out;
      if (r == Z_STREAM_END) {
        in_member = false;
      } else if (r != Z_OK && r != Z_BUF_ERROR) {
        flush();
        return absl::DataLossError(absl::StrCat(
            "gzip stream is corrupt: ", z.msg != nullptr ? z.msg : zError(r),
            " (after ", bytes_, " bytes of tar)"));
      }
      if (blk.len == blk.data.size()) flush();
    }
    flush();
    return absl::OkStatus();
  }

  // Producer thread: decompress, hash, hand over.
  void Produce() {
    absl::Status status;
    if (outer_ == nullptr) {
      status = gzip_ ? ProduceGzip() : ProducePlain();
      {
        std::lock_guard<std::mutex> lock(mu_);
        producer_status_ = status;
        done_ = true;
      }
      cv_.notify_all();
      return;
    }
    for (;;) {
      const void* b;
      size_t n;
      la_int64_t off;
      int r = archive_read_data_block(outer_, &b, &n, &off);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        status = OuterError("reading layer stream");
        break;
      }
      hash_.Update(b, n);
      bytes_ += n;
      const char* p = static_cast<const char*>(b);
      while (n > 0) {
        int idx;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return !free_.empty() || stop_; });
          if (stop_) return;
          idx = free_.front();
          free_.pop_front();
        }
        Block& blk = pool_[idx];
        blk.len = std::min(n, blk.data.size());
        std::memcpy(blk.data.data(), p, blk.len);
        p += blk.len;
        n -= blk.len;
        {
          std::lock_guard<std::mutex> lock(mu_);
          full_.push_back(idx);
        }
        cv_.notify_all();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      producer_status_ = status;
      done_ = true;
    }
    cv_.notify_all();
  }

  // Next filled block, or -1 at the end of the stream.
  int NextFull() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !full_.empty() || done_; });
    if (full_.empty()) return -1;
    int idx = full_.front();
    full_.pop_front();
    return idx;
  }

  void Release(int idx) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(idx);
    }
    cv_.notify_all();
  }

  void Stop() {
    if (!producer_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!done_) stop_ = true;
    }
    cv_.notify_all();
    producer_.join();
  }

  static la_ssize_t OuterRead(struct archive* a, void* ctx, const void** out) {
    auto* self = static_cast<LayerReader*>(ctx);
    if (self->prefetched_ > 0) {  // the bytes Open() looked at
      *out = self->src_buf_.data();
      return static_cast<la_ssize_t>(std::exchange(self->prefetched_, 0));
    }
    absl::StatusOr<size_t> n = self->source_.Read(self->src_buf_.data(), self->src_buf_.size());
    if (!n.ok()) {
      self->source_status_ = n.status();
      archive_set_error(a, EIO, "%s", std::string(n.status().message()).c_str());
      return -1;
    }
    *out = self->src_buf_.data();
    return static_cast<la_ssize_t>(*n);
  }

  static la_ssize_t InnerRead(struct archive* a, void* ctx, const void** out) {
    auto* self = static_cast<LayerReader*>(ctx);
    if (self->held_ >= 0) {
      self->Release(self->held_);
      self->held_ = -1;
    }
    int idx = self->NextFull();
    if (idx < 0) {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (!self->producer_status_.ok()) {
        archive_set_error(a, EIO, "%s", std::string(self->producer_status_.message()).c_str());
        return -1;
      }
      return 0;
    }
    self->held_ = idx;
    *out = self->pool_[idx].data.data();
    return static_cast<la_ssize_t>(self->pool_[idx].len);
  }

  ByteSource& source_;
  RawBuffer src_buf_;
  size_t prefetched_ = 0;
  bool gzip_ = false;
  struct archive* outer_ = nullptr;
  struct archive* inner_ = nullptr;
  absl::Status source_status_;  // producer thread only until done_
  Sha256 hash_;                 // producer thread only until done_
  uint64_t bytes_ = 0;          // producer thread only until done_

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Block> pool_;
  std::deque<int> free_, full_;
  bool done_ = false, stop_ = false;
  absl::Status producer_status_;
  int held_ = -1;  // block lent to the tar reader
  std::thread producer_;
};

struct DeferredDir {
  std::string path;
  mode_t mode;
  struct timespec times[2];
};

class Applier {
 public:
  Applier(int root_fd, const ApplyOptions& options) : root_(root_fd), opts_(options) {}

  absl::Status Entry(struct archive* a, struct archive_entry* e, ApplyDiffResult& result);
  absl::Status Finish();

 private:
  absl::StatusOr<int> OpenParent(const std::string& parent, bool create);
  void Invalidate(const std::string& path) {
    if (!cached_valid_) return;
    if (cached_parent_ == path || path.empty() ||
        absl::StartsWith(cached_parent_, absl::StrCat(path, "/"))) {
      cached_valid_ = false;
      cached_fd_.reset();
    }
  }
  void MarkUnpacked(const std::string& path) {
    if (opts_.whiteouts == WhiteoutFormat::kDelete) unpacked_.insert(path);
  }
  bool Unpacked(const std::string& path) const {
    auto it = unpacked_.lower_bound(path);
    if (it == unpacked_.end()) return false;
    if (*it == path) return true;
    return absl::StartsWith(*it, absl::StrCat(path, "/"));
  }
  absl::Status Whiteout(const std::string& parent, const std::string& name,
                        struct archive_entry* e);
  absl::Status Opaque(const std::string& dir);
  absl::Status OpaqueDelete(const std::string& dir);
  absl::Status SetXattrs(struct archive_entry* e, int fd, int dirfd, const std::string& name);
  absl::Status Chown(struct archive_entry* e, int dirfd, const std::string& name, int fd);

  int root_;
  ApplyOptions opts_;
  std::string cached_parent_;
  base::UniqueFd cached_fd_;
  bool cached_valid_ = false;
  std::set<std::string> unpacked_;
  std::vector<DeferredDir> dirs_;
};

absl::StatusOr<int> Applier::OpenParent(const std::string& parent, bool create) {
  if (cached_valid_ && cached_parent_ == parent) return cached_fd_.get();
  cached_valid_ = false;
  cached_fd_.reset(Openat2(root_, parent, O_PATH | O_DIRECTORY, kInRoot));
  if (!cached_fd_) {
    if (errno != ENOENT || !create) {
      return base::ErrnoError(errno, absl::StrCat("resolving directory ", Quote(parent), " in the layer"));
    }
    // Create the missing directories one by one, each resolved in the root.
    base::UniqueFd dir(Openat2(root_, "", O_PATH | O_DIRECTORY, kInRoot));
    if (!dir) return base::ErrnoError(errno, "opening layer root");
    std::string prefix;
    for (absl::string_view comp : absl::StrSplit(parent, '/')) {
      std::string c(comp);
      prefix = prefix.empty() ? c : absl::StrCat(prefix, "/", c);
      base::UniqueFd next(Openat2(root_, prefix, O_PATH | O_DIRECTORY, kInRoot));
      if (!next && errno == ENOENT) {
        if (::mkdirat(dir.get(), c.c_str(), 0755) != 0 && errno != EEXIST) {
          return base::ErrnoError(errno, absl::StrCat("creating directory ", Quote(prefix)));
        }
        MarkUnpacked(prefix);
        next.reset(Openat2(root_, prefix, O_PATH | O_DIRECTORY, kInRoot));
      }
      if (!next) {
        return base::ErrnoError(errno, absl::StrCat("resolving directory ", Quote(prefix), " in the layer"));
      }
      dir = std::move(next);
    }
    cached_fd_ = std::move(dir);
  }
  cached_parent_ = parent;
  cached_valid_ = true;
  return cached_fd_.get();
}

absl::Status Applier::Chown(struct archive_entry* e, int dirfd, const std::string& name, int fd) {
  if (!opts_.preserve_owners) return absl::OkStatus();
  uid_t uid = static_cast<uid_t>(archive_entry_uid(e));
  gid_t gid = static_cast<gid_t>(archive_entry_gid(e));
  int r = fd >= 0 ? ::fchown(fd, uid, gid)
                  : ::fchownat(dirfd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return base::ErrnoError(errno, absl::StrCat("chown ", uid, ":", gid));
  return absl::OkStatus();
}

absl::Status Applier::SetXattrs(struct archive_entry* e, int fd, int dirfd, const std::string& name) {
  if (archive_entry_xattr_reset(e) == 0) return absl::OkStatus();
  const char* key;
  const void* value;
  size_t size;
  std::string proc_path;
  while (archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
    // Overlay's own xattrs (opaque, redirect, origin, metacopy) are never
    // taken from a tarball: they would let a layer rewire the overlay.
    if (absl::StartsWith(key, "trusted.overlay.") || absl::StartsWith(key, "user.overlay.")) continue;
    int r;
    if (fd >= 0) {
      r = ::fsetxattr(fd, key, value, size, 0);
    } else {
      if (proc_path.empty()) proc_path = absl::StrCat("/proc/self/fd/", dirfd, "/", name);
      r = ::lsetxattr(proc_path.c_str(), key, value, size, 0);
    }
    if (r != 0) return base::ErrnoError(errno, absl::StrCat("setting xattr ", key));
  }
  return absl::OkStatus();
}

absl::Status Applier::Whiteout(const std::string& parent, const std::string& name,
                               struct archive_entry* e) {
  std::string target = parent.empty() ? name : absl::StrCat(parent, "/", name);
  switch (opts_.whiteouts) {
    case WhiteoutFormat::kAufs:
      return absl::InternalError("aufs whiteouts are applied as files");
    case WhiteoutFormat::kOverlay: {
      ASSIGN_OR_RETURN(int dirfd, OpenParent(parent, true));
      struct stat st;
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        return absl::OkStatus();  // present in this layer: the whiteout only hides lower layers
      }
      if (::mknodat(dirfd, name.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
        return base::ErrnoError(errno, absl::StrCat("creating overlay whiteout ", Quote(target)));
      }
      return Chown(e, dirfd, name, -1);
    }
    case WhiteoutFormat::kDelete: {
      if (Unpacked(target)) return absl::OkStatus();
      absl::StatusOr<int> dirfd = OpenParent(parent, false);
      if (!dirfd.ok()) {
        if (base::HasErrno(dirfd.status(), ENOENT) || base::HasErrno(dirfd.status(), ENOTDIR)) {
          return absl::OkStatus();  // nothing below to delete
        }
        return dirfd.status();
      }
      Invalidate(target);
      return RemoveTree(*dirfd, name);
    }
  }
  return absl::OkStatus();
}

absl::Status Applier::Opaque(const std::string& dir) {
  switch (opts_.whiteouts) {
    case WhiteoutFormat::kAufs:
      return absl::InternalError("aufs opaque markers are applied as files");
    case WhiteoutFormat::kOverlay: {
      if (!dir.empty()) RETURN_IF_ERROR(OpenParent(dir, true).status());
      base::UniqueFd fd(Openat2(root_, dir, O_RDONLY | O_DIRECTORY, kInRoot));
      if (!fd) return base::ErrnoError(errno, absl::StrCat("opening opaque directory ", Quote(dir)));
      if (::fsetxattr(fd.get(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
        return base::ErrnoError(errno, absl::StrCat("marking ", Quote(dir), " opaque"));
      }
      return absl::OkStatus();
    }
    case WhiteoutFormat::kDelete:
      return OpaqueDelete(dir);
  }
  return absl::OkStatus();
}

// Removes everything under `dir` that this layer did not unpack.
absl::Status Applier::OpaqueDelete(const std::string& dir) {
  base::UniqueFd fd(Openat2(root_, dir, O_RDONLY | O_DIRECTORY, kInRoot));
  if (!fd) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("opening opaque directory ", Quote(dir)));
  }
  DIR* d = ::fdopendir(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (d == nullptr) return base::ErrnoError(errno, absl::StrCat("listing ", Quote(dir)));
  std::vector<std::pair<std::string, bool>> children;
  while (struct dirent* ent = ::readdir(d)) {
    std::string n = ent->d_name;
    if (n == "." || n == "..") continue;
    children.emplace_back(n, ent->d_type == DT_DIR);
  }
  ::closedir(d);
  for (const auto& [name, is_dir] : children) {
    std::string path = dir.empty() ? name : absl::StrCat(dir, "/", name);
    if (!Unpacked(path)) {
      Invalidate(path);
      RETURN_IF_ERROR(RemoveTree(fd.get(), name));
    } else if (is_dir) {
      RETURN_IF_ERROR(OpaqueDelete(path));
    }
  }
  return absl::OkStatus();
}

absl::Status Applier::Entry(struct archive* a, struct archive_entry* e, ApplyDiffResult& result) {
  const char* raw = archive_entry_pathname(e);
  if (raw == nullptr) raw = archive_entry_pathname_utf8(e);
  if (raw == nullptr) return absl::InvalidArgumentError("entry without a path");
  ASSIGN_OR_RETURN(std::string path, archive_internal::CleanPath(raw));

  const mode_t type = archive_entry_filetype(e);
  const char* hardlink = archive_entry_hardlink(e);
  size_t slash = path.rfind('/');
  std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);

  if (opts_.whiteouts != WhiteoutFormat::kAufs && absl::StartsWith(name, archive_internal::kWhiteoutPrefix)) {
    if (name == archive_internal::kOpaqueMarker) return Opaque(parent);
    if (absl::StartsWith(name, archive_internal::kWhiteoutMetaPrefix)) return absl::OkStatus();  // aufs metadata
    std::string target = name.substr(archive_internal::kWhiteoutPrefix.size());
    if (target == "." || target == "..") {
      return absl::InvalidArgumentError(absl::StrCat("invalid whiteout ", Quote(path)));
    }
    return Whiteout(parent, target, e);
  }

  struct timespec times[2];
  times[1].tv_sec = archive_entry_mtime(e);
  times[1].tv_nsec = archive_entry_mtime_nsec(e);
  if (archive_entry_atime_is_set(e)) {
    times[0].tv_sec = archive_entry_atime(e);
    times[0].tv_nsec = archive_entry_atime_nsec(e);
  } else {
    times[0] = times[1];
  }
  const mode_t perm = archive_entry_perm(e) & 07777;

  if (path.empty()) {  // the layer root itself ("./")
    if (type != AE_IFDIR || hardlink != nullptr) {
      return absl::InvalidArgumentError("the layer root entry must be a directory");
    }
    base::UniqueFd fd(Openat2(root_, "", O_RDONLY | O_DIRECTORY, kInRoot));
    if (!fd) return base::ErrnoError(errno, "opening layer root");
    RETURN_IF_ERROR(Chown(e, -1, "", fd.get()));
    RETURN_IF_ERROR(SetXattrs(e, fd.get(), -1, ""));
    dirs_.push_back({"", perm, {times[0], times[1]}});
    return absl::OkStatus();
  }

  ASSIGN_OR_RETURN(int dirfd, OpenParent(parent, true));
  const bool is_dir = type == AE_IFDIR && hardlink == nullptr;
  bool was_whiteout = false;
  // Called when creating the entry failed with EEXIST (rare: layers are
  // usually applied into empty or copied trees, and checking first would
  // cost a syscall per entry): keeps an existing directory for a directory
  // entry, removes anything else. Returns whether it kept a directory.
  auto make_room = [&]() -> absl::StatusOr<bool> {
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return base::ErrnoError(errno, "stat");
    if (is_dir && S_ISDIR(st.st_mode)) return true;
    was_whiteout = S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
    Invalidate(path);
    RETURN_IF_ERROR(RemoveTree(dirfd, name));
    return false;
  };
  MarkUnpacked(path);

  if (hardlink != nullptr) {
    ASSIGN_OR_RETURN(std::string target, archive_internal::CleanPath(hardlink));
    if (target.empty()) return absl::InvalidArgumentError("hardlink to the layer root");
    size_t ts = target.rfind('/');
    std::string tparent = ts == std::string::npos ? "" : target.substr(0, ts);
    std::string tname = ts == std::string::npos ? target : target.substr(ts + 1);
    base::UniqueFd tdir(Openat2(root_, tparent, O_PATH | O_DIRECTORY, kInRoot));
    bool linked = tdir && ::linkat(tdir.get(), tname.c_str(), dirfd, name.c_str(), 0) == 0;
    if (!linked && tdir && errno == EEXIST) {
      RETURN_IF_ERROR(make_room().status());
      linked = ::linkat(tdir.get(), tname.c_str(), dirfd, name.c_str(), 0) == 0;
    }
    if (!linked) {
      return base::ErrnoError(errno, absl::StrCat("hardlink to ", Quote(target),
                                                  " (the target must be an earlier entry of this layer)"));
    }
    return absl::OkStatus();
  }

  switch (type) {
    case AE_IFREG: {
      int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
      if (size < 0 || size > opts_.max_file_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("file size ", size, " exceeds the limit of ", opts_.max_file_size, " bytes"));
      }
      constexpr int kCreate = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
      base::UniqueFd fd(::openat(dirfd, name.c_str(), kCreate, 0600));
      if (!fd && errno == EEXIST) {
        RETURN_IF_ERROR(make_room().status());
        fd.reset(::openat(dirfd, name.c_str(), kCreate, 0600));
      }
      if (!fd) return base::ErrnoError(errno, "creating file");
      int64_t end = 0;
      for (;;) {
        const void* buf;
        size_t len;
        la_int64_t off;
        int r = archive_read_data_block(a, &buf, &len, &off);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
          const char* msg = archive_error_string(a);
          return absl::DataLossError(absl::StrCat("reading file data: ", msg ? msg : "unknown error"));
        }
        if (off < 0 || off + static_cast<int64_t>(len) > size) {
          return absl::InvalidArgumentError("file data beyond its declared size");
        }
        const char* p = static_cast<const char*>(buf);
        while (len > 0) {
          ssize_t w = ::pwrite(fd.get(), p, len, off);
          if (w < 0) {
            if (errno == EINTR) continue;
            return base::ErrnoError(errno, "writing file data");
          }
          p += w;
          len -= static_cast<size_t>(w);
          off += w;
        }
        end = std::max<int64_t>(end, off);
      }
      if (end < size && ::ftruncate(fd.get(), size) != 0) {
        return base::ErrnoError(errno, "extending sparse file");
      }
      result.size += size;
      RETURN_IF_ERROR(Chown(e, -1, "", fd.get()));
      if (::fchmod(fd.get(), perm) != 0) return base::ErrnoError(errno, "chmod");
      RETURN_IF_ERROR(SetXattrs(e, fd.get(), -1, ""));
      if (::futimens(fd.get(), times) != 0) return base::ErrnoError(errno, "setting times");
      return absl::OkStatus();
    }
    case AE_IFDIR: {
      if (::mkdirat(dirfd, name.c_str(), 0700) != 0) {
        if (errno != EEXIST) return base::ErrnoError(errno, "mkdir");
        ASSIGN_OR_RETURN(bool kept, make_room());
        if (!kept && ::mkdirat(dirfd, name.c_str(), 0700) != 0) return base::ErrnoError(errno, "mkdir");
      }
      base::UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return base::ErrnoError(errno, "opening directory");
      RETURN_IF_ERROR(Chown(e, -1, "", fd.get()));
      RETURN_IF_ERROR(SetXattrs(e, fd.get(), -1, ""));
      if (was_whiteout && opts_.whiteouts == WhiteoutFormat::kOverlay) {
        // A directory replacing a whiteout of this layer hides the lower one.
        if (::fsetxattr(fd.get(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
          return base::ErrnoError(errno, "marking directory opaque");
        }
      }
      dirs_.push_back({path, perm, {times[0], times[1]}});
      return absl::OkStatus();
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (target == nullptr) target = archive_entry_symlink_utf8(e);
      if (target == nullptr || *target == 0) return absl::InvalidArgumentError("symlink without a target");
      RETURN_IF_ERROR(archive_internal::CheckSymlinkTarget(parent, target));
      if (::symlinkat(target, dirfd, name.c_str()) != 0) {
        if (errno != EEXIST) return base::ErrnoError(errno, "creating symlink");
        RETURN_IF_ERROR(make_room().status());
        if (::symlinkat(target, dirfd, name.c_str()) != 0) return base::ErrnoError(errno, "creating symlink");
      }
      RETURN_IF_ERROR(Chown(e, dirfd, name, -1));
      RETURN_IF_ERROR(SetXattrs(e, -1, dirfd, name));
      if (::utimensat(dirfd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        return base::ErrnoError(errno, "setting symlink times");
      }
      return absl::OkStatus();
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      dev_t dev = type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
      if (::mknodat(dirfd, name.c_str(), type | perm, dev) != 0) {
        if (errno != EEXIST) return base::ErrnoError(errno, "creating device node");
        RETURN_IF_ERROR(make_room().status());
        if (::mknodat(dirfd, name.c_str(), type | perm, dev) != 0) {
          return base::ErrnoError(errno, "creating device node");
        }
      }
      RETURN_IF_ERROR(Chown(e, dirfd, name, -1));
      if (::fchmodat(dirfd, name.c_str(), perm, 0) != 0) return base::ErrnoError(errno, "chmod");
      RETURN_IF_ERROR(SetXattrs(e, -1, dirfd, name));
      if (::utimensat(dirfd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        return base::ErrnoError(errno, "setting times");
      }
      return absl::OkStatus();
    }
    case AE_IFSOCK:
      return absl::OkStatus();  // sockets are not restored (like GNU tar)
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported entry type 0", absl::Hex(type)));
  }
}

absl::Status Applier::Finish() {
  // Children before parents: setting a directory's mtime must come after
  // everything inside it was written.
  std::stable_sort(dirs_.begin(), dirs_.end(), [](const DeferredDir& x, const DeferredDir& y) {
    return x.path.size() > y.path.size();
  });
  for (const DeferredDir& d : dirs_) {
    base::UniqueFd fd(Openat2(root_, d.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, kInRoot));
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;  // replaced later in the stream
      return base::ErrnoError(errno, absl::StrCat("reopening directory ", Quote(d.path)));
    }
    if (::fchmod(fd.get(), d.mode) != 0) {
      return base::ErrnoError(errno, absl::StrCat("chmod directory ", Quote(d.path)));
    }
    if (::futimens(fd.get(), d.times) != 0) {
      return base::ErrnoError(errno, absl::StrCat("setting times of directory ", Quote(d.path)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ApplyDiffResult> ApplyLayer(int root_fd, ByteSource& source, const ApplyOptions& options) {
  LayerReader reader(source);
  RETURN_IF_ERROR(reader.Open());
  Applier applier(root_fd, options);
  ApplyDiffResult result;
  uint64_t index = 0;
  for (;; ++index) {
    struct archive_entry* entry = nullptr;
    int r = archive_read_next_header(reader.tar(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return reader.Error(reader.tar(), absl::StrCat("reading tar header of entry ", index));
    }
    absl::Status s = applier.Entry(reader.tar(), entry, result);
    if (!s.ok()) {
      const char* p = archive_entry_pathname(entry);
      return base::Annotate(s, absl::StrCat("layer entry ", index, " ", Quote(p ? p : "?")));
    }
  }
  RETURN_IF_ERROR(reader.Drain());
  RETURN_IF_ERROR(applier.Finish());
  result.tar_bytes = reader.bytes();
  result.diff_id = reader.Digest();
  return result;
}

const char* WhiteoutFormatName(WhiteoutFormat format) {
  switch (format) {
    case WhiteoutFormat::kOverlay: return "overlay";
    case WhiteoutFormat::kAufs: return "aufs";
    case WhiteoutFormat::kDelete: return "delete";
  }
  return "unknown";
}

}  // namespace graph
