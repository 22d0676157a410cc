#include "thinpool/filesystem.h"

#include <blkid.h>
extern "C" {
#include <et/com_err.h>
}
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace thinpool {
namespace {

// Every libext2fs error code reported here goes through this: error_message()
// only knows the ext2 table's texts once it has been registered (else it
// says "Unknown code ext2 71").
absl::Status Ext2Error(errcode_t err, absl::string_view what) {
  // Small codes are plain errno values.
  if (err > 0 && err < 4096) return base::ErrnoError(static_cast<int>(err), what);
  static std::once_flag registered;
  std::call_once(registered, [] { initialize_ext2_error_table(); });
  return absl::InternalError(
      absl::StrCat(what, ": ", error_message(err), " (ext2fs error ", err, ")"));
}

absl::Status RandomUuid(uint8_t out[16]) {
  size_t got = 0;
  while (got < 16) {
    ssize_t n = ::getrandom(out + got, 16 - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(errno, "getrandom for filesystem uuid");
    }
    got += static_cast<size_t>(n);
  }
  out[6] = (out[6] & 0x0f) | 0x40;  // version 4
  out[8] = (out[8] & 0x3f) | 0x80;  // RFC 4122 variant
  return absl::OkStatus();
}

absl::Status ParseUuid(const std::string& text, uint8_t out[16]) {
  int n = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '-') {
      if (i != 8 && i != 13 && i != 18 && i != 23) break;
      continue;
    }
    int v = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (v < 0 || n >= 32) {
      n = -1;
      break;
    }
    if (n % 2 == 0) {
      out[n / 2] = static_cast<uint8_t>(v << 4);
    } else {
      out[n / 2] |= static_cast<uint8_t>(v);
    }
    ++n;
  }
  if (n != 32 || text.size() != 36) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid filesystem uuid '", text, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> SizeOf(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  struct stat st;
  if (::fstat(fd, &st) < 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) < 0) {
      return base::ErrnoError(errno, absl::StrCat("BLKGETSIZE64 on ", path));
    }
    return size;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, " is neither a block device nor a regular file"));
}

// Zeroes the 1 KiB before the ext4 superblock so no older boot-sector style
// signature (e.g. a previous filesystem's) confuses probing.
absl::Status ZapStart(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  char zeros[1024] = {};
  if (::pwrite(fd, zeros, sizeof zeros, 0) != ssize_t(sizeof zeros)) {
    return base::ErrnoError(errno, absl::StrCat("zeroing start of ", path));
  }
  return absl::OkStatus();
}

struct FsCloser {
  void operator()(ext2_filsys fs) const { ext2fs_free(fs); }
};

// The filesystem's overhead (metadata blocks) exactly as the kernel counts
// it: blocks before the first group, then per group the superblock copy with
// its descriptor and reserved descriptor blocks where there is one, the inode
// table and two bitmaps, plus the internal journal (fs/ext4/super.c:
// ext4_calculate_overhead, count_overhead; checked against the kernel by
// tests/host/thinpool_ext4_test). At every rw
// mount the kernel compares its figure with s_overhead_clusters and, if they
// differ, rewrites the primary and every backup superblock synchronously
// (ext4_update_overhead). On a thin snapshot each of those writes breaks the
// sharing of a pool block and commits the pool's metadata: with the figure
// right the mount writes only what it must.
blk64_t KernelOverheadBlocks(ext2_filsys fs) {
  blk64_t overhead = fs->super->s_first_data_block;
  for (dgrp_t g = 0; g < fs->group_desc_count; ++g) {
    if (ext2fs_bg_has_super(fs, static_cast<int>(g))) {
      overhead += 1 + fs->desc_blocks + fs->super->s_reserved_gdt_blocks;
    }
    overhead += fs->inode_blocks_per_group + 2;
  }
  if (fs->super->s_journal_inum != 0) {
    struct ext2_inode journal;
    if (ext2fs_read_inode(fs, fs->super->s_journal_inum, &journal) == 0) {
      overhead += EXT2_I_SIZE(&journal) / fs->blocksize;
    }
  }
  return overhead;
}

}  // namespace

absl::Status ValidateExt4(uint64_t bytes, const Ext4Options& options) {
  if (options.block_size != 1024 && options.block_size != 2048 &&
      options.block_size != 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ext4 block size must be 1024, 2048 or 4096, got ", options.block_size));
  }
  if (options.label.size() > 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ext4 label '", options.label, "' is longer than 16 bytes"));
  }
  if (options.inode_size != 128 && options.inode_size != 256 &&
      options.inode_size != 512 && options.inode_size != 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported inode size ", options.inode_size));
  }
  if (options.bytes_per_inode < options.block_size ||
      options.reserved_percent < 0 || options.reserved_percent > 50) {
    return absl::InvalidArgumentError("bad bytes_per_inode or reserved_percent");
  }
  if (bytes < kMinExt4Bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot make ext4 on ", bytes, " bytes: the minimum is 1 MiB"));
  }
  const uint64_t max = MaxExt4Bytes(options.block_size);
  if (bytes > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot make ext4 on ", bytes, " bytes: with ", options.block_size,
        "-byte blocks ext4 holds at most ", max, " bytes (", max / options.block_size,
        " blocks: block numbers are 48-bit, block groups counted in 32 bits)"));
  }
  return absl::OkStatus();
}

uint64_t MaxExt4Bytes(uint32_t block_size) {
  // Extents address 48-bit physical blocks; libext2fs counts block groups
  // (8 x block_size blocks each) in 32 bits. Whichever is lower.
  const uint64_t by_extents = (uint64_t{1} << 48) - 1;
  const uint64_t by_groups = uint64_t{0xffffffff} * 8 * block_size;
  return std::min(by_extents, by_groups) * block_size;
}

absl::Status MakeExt4(const std::string& path, const Ext4Options& options) {
  ASSIGN_OR_RETURN(uint64_t bytes, SizeOf(path));
  RETURN_IF_ERROR(base::Annotate(ValidateExt4(bytes, options), path));
  uint8_t uuid[16];
  if (options.uuid) {
    RETURN_IF_ERROR(ParseUuid(*options.uuid, uuid));
  } else {
    RETURN_IF_ERROR(RandomUuid(uuid));
  }
  const uint64_t blocks = bytes / options.block_size;
  RETURN_IF_ERROR(ZapStart(path));

  struct ext2_super_block param;
  std::memset(&param, 0, sizeof param);
  // Features first: the 64-bit counts' high words are stored only when the
  // 64bit feature is already set (ext2fs_blocks_count_set), else a 20 TiB
  // device silently got a 4 TiB filesystem.
  param.s_feature_compat = EXT2_FEATURE_COMPAT_EXT_ATTR |
                           EXT2_FEATURE_COMPAT_RESIZE_INODE |
                           EXT2_FEATURE_COMPAT_DIR_INDEX;
  param.s_feature_incompat = EXT2_FEATURE_INCOMPAT_FILETYPE |
                             EXT3_FEATURE_INCOMPAT_EXTENTS |
                             EXT4_FEATURE_INCOMPAT_64BIT |
                             EXT4_FEATURE_INCOMPAT_FLEX_BG;
  param.s_feature_ro_compat =
      EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | EXT2_FEATURE_RO_COMPAT_LARGE_FILE |
      EXT4_FEATURE_RO_COMPAT_HUGE_FILE | EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
      EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE | EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;
  param.s_log_groups_per_flex = 4;
  param.s_desc_size = EXT2_MIN_DESC_SIZE_64BIT;
  ext2fs_blocks_count_set(&param, blocks);
  int log = 0;
  while ((1024u << log) < options.block_size) ++log;
  param.s_log_block_size = log;
  param.s_log_cluster_size = log;
  param.s_rev_level = EXT2_DYNAMIC_REV;
  param.s_inode_size = static_cast<uint16_t>(options.inode_size);
  param.s_inodes_count = static_cast<uint32_t>(
      std::min<uint64_t>(bytes / options.bytes_per_inode, 0xffffffffULL - 1));
  ext2fs_r_blocks_count_set(
      &param, static_cast<blk64_t>(blocks * options.reserved_percent / 100.0));

  ext2_filsys raw_fs = nullptr;
  errcode_t err = ext2fs_initialize(path.c_str(), EXT2_FLAG_EXCLUSIVE | EXT2_FLAG_64BITS,
                                    &param, unix_io_manager, &raw_fs);
  if (err) return Ext2Error(err, absl::StrCat("ext2fs_initialize ", path));
  std::unique_ptr<struct struct_ext2_filsys, FsCloser> fs(raw_fs);
  ext2_super_block* sb = fs->super;

  std::memcpy(sb->s_uuid, uuid, sizeof uuid);
  uint8_t hash_seed[16];
  RETURN_IF_ERROR(RandomUuid(hash_seed));
  std::memcpy(sb->s_hash_seed, hash_seed, sizeof hash_seed);
  sb->s_def_hash_version = EXT2_HASH_HALF_MD4;
  sb->s_max_mnt_count = static_cast<__u16>(-1);
  sb->s_checkinterval = 0;
  sb->s_min_extra_isize = sb->s_want_extra_isize =
      sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
  sb->s_flags |= EXT2_FLAGS_UNSIGNED_HASH;
  sb->s_mkfs_time = sb->s_wtime = static_cast<__u32>(::time(nullptr));
  std::strncpy(reinterpret_cast<char*>(sb->s_volume_name), options.label.c_str(),
               sizeof sb->s_volume_name);
  // metadata_csum: the checksum type must be set before the seed, or e2fsck
  // says "Unknown checksum algorithm" and the kernel refuses to mount.
  ext2fs_clear_feature_gdt_csum(sb);
  sb->s_checksum_type = EXT2_CRC32C_CHKSUM;
  ext2fs_init_csum_seed(fs.get());

  err = ext2fs_allocate_tables(fs.get());
  if (err) return Ext2Error(err, "allocating group tables");

  // Inode tables: ext2fs_initialize marked every group INODE_UNINIT with all
  // inodes unused. Either promise the kernel they are zero (the device reads
  // zeros) or leave them to the kernel's lazy init; write nothing either way.
  for (dgrp_t g = 0; g < fs->group_desc_count; ++g) {
    if (options.assume_zeroed) {
      ext2fs_bg_flags_set(fs.get(), g, EXT2_BG_INODE_ZEROED);
    }
    ext2fs_group_desc_csum_set(fs.get(), g);
  }
  if (!options.assume_zeroed) {
    // The first inode table block holds the reserved inodes, root and
    // lost+found plus a few unused neighbours: zero it whole.
    blk64_t first = ext2fs_inode_table_loc(fs.get(), 0);
    err = ext2fs_zero_blocks2(fs.get(), first, 1, nullptr, nullptr);
    if (err) return Ext2Error(err, "zeroing the first inode table block");
  }
  // Reserved inodes read back as zeros (mke2fs writes them explicitly).
  {
    std::vector<char> zero_inode(EXT2_INODE_SIZE(sb), 0);
    for (ext2_ino_t ino = 1; ino < EXT2_FIRST_INODE(sb); ++ino) {
      err = ext2fs_write_inode_full(
          fs.get(), ino, reinterpret_cast<ext2_inode*>(zero_inode.data()),
          EXT2_INODE_SIZE(sb));
      if (err) return Ext2Error(err, absl::StrCat("writing reserved inode ", ino));
    }
  }

  err = ext2fs_mkdir(fs.get(), EXT2_ROOT_INO, EXT2_ROOT_INO, nullptr);
  if (err) return Ext2Error(err, "creating the root directory");
  err = ext2fs_mkdir(fs.get(), EXT2_ROOT_INO, 0, "lost+found");
  if (err) return Ext2Error(err, "creating lost+found");
  {
    // Give lost+found room (e2fsck wants to be able to use it without
    // allocating), as mke2fs does: at least 16 KiB.
    ext2_ino_t lpf = 0;
    err = ext2fs_lookup(fs.get(), EXT2_ROOT_INO, "lost+found", 10, nullptr, &lpf);
    if (err) return Ext2Error(err, "looking up lost+found");
    for (unsigned size = options.block_size; size < 16384; size += options.block_size) {
      err = ext2fs_expand_dir(fs.get(), lpf);
      if (err) return Ext2Error(err, "expanding lost+found");
    }
  }
  // Mark the reserved inodes (bad blocks inode and 3..first_ino-1) in use.
  ext2fs_inode_alloc_stats2(fs.get(), EXT2_BAD_INO, +1, 0);
  for (ext2_ino_t ino = EXT2_ROOT_INO + 1; ino < EXT2_FIRST_INODE(sb); ++ino) {
    ext2fs_inode_alloc_stats2(fs.get(), ino, +1, 0);
  }
  ext2fs_mark_ib_dirty(fs.get());
  err = ext2fs_update_bb_inode(fs.get(), nullptr);
  if (err) return Ext2Error(err, "writing the bad blocks inode");

  err = ext2fs_create_resize_inode(fs.get());
  if (err) return Ext2Error(err, "creating the resize inode");

  if (options.journal) {
    struct ext2fs_journal_params jparams;
    std::memset(&jparams, 0, sizeof jparams);
    err = ext2fs_get_journal_params(&jparams, fs.get());
    if (err == 0 && jparams.num_journal_blocks > 0) {
      int flags = EXT2_MKJOURNAL_NO_MNT_CHECK;
      if (options.assume_zeroed) flags |= EXT2_MKJOURNAL_LAZYINIT;
      err = ext2fs_add_journal_inode3(fs.get(), &jparams, ~0ULL, flags);
      if (err) return Ext2Error(err, "creating the journal");
    } else if (err != 0 && err != EXT2_ET_JOURNAL_TOO_SMALL) {
      return Ext2Error(err, "sizing the journal");
    }
    // Too small for a journal: made without one, like mke2fs.
  }

  sb->s_overhead_clusters = KernelOverheadBlocks(fs.get());
  ext2fs_mark_super_dirty(fs.get());

  ext2_filsys closing = fs.release();
  err = ext2fs_close_free(&closing);
  if (err) return Ext2Error(err, absl::StrCat("writing the filesystem to ", path));

  // Make it durable before anyone mounts or snapshots it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<FilesystemInfo>> IdentifyFilesystem(
    const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  blkid_probe probe = blkid_new_probe();
  if (probe == nullptr) return absl::ResourceExhaustedError("blkid_new_probe");
  auto free_probe = std::unique_ptr<blkid_struct_probe, void (*)(blkid_probe)>(
      probe, blkid_free_probe);
  if (blkid_probe_set_device(probe, fd, 0, 0) != 0) {
    return absl::InternalError(absl::StrCat("blkid cannot probe ", path));
  }
  blkid_probe_enable_superblocks(probe, 1);
  blkid_probe_set_superblocks_flags(
      probe, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID | BLKID_SUBLKS_LABEL);
  int rc = blkid_do_safeprobe(probe);
  if (rc == 1) return std::optional<FilesystemInfo>();
  if (rc == -2) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " carries several conflicting filesystem signatures"));
  }
  if (rc < 0) return absl::InternalError(absl::StrCat("blkid probe of ", path, " failed"));
  FilesystemInfo info;
  const char* value = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(probe, "TYPE", &value, &len) == 0) info.type = value;
  if (blkid_probe_lookup_value(probe, "UUID", &value, &len) == 0) info.uuid = value;
  if (blkid_probe_lookup_value(probe, "LABEL", &value, &len) == 0) info.label = value;
  return std::optional<FilesystemInfo>(info);
}

}  // namespace thinpool
