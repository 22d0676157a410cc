#include "volume/thin_backend.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "libdm/control.h"
#include "thinpool/exec.h"
#include "thinpool/filesystem.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace volume {
namespace {

constexpr char kThinPrefix[] = "vol-";

class ThinBackend : public VolumeBackend {
 public:
  ThinBackend(std::unique_ptr<dm::Control> dm, std::unique_ptr<thinpool::StateDir> state,
              std::unique_ptr<thinpool::Pool> pool, std::string mnt_dir)
      : dm_(std::move(dm)), state_(std::move(state)), pool_(std::move(pool)),
        mnt_dir_(std::move(mnt_dir)) {}

  absl::StatusOr<std::string> CheckCreate(uint64_t size_bytes, const std::string& fs) override {
    if (size_bytes == 0) {
      return absl::InvalidArgumentError("a thin volume needs a size (e.g. size=10G)");
    }
    std::string want = fs.empty() ? "ext4" : fs;
    if (want == "ext4") return want;
    if (want == "xfs") {
      if (!thinpool::FindProgram("mkfs.xfs")) {
        return absl::FailedPreconditionError("fs=xfs needs mkfs.xfs (xfsprogs), which is not installed");
      }
      return want;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported volume filesystem \"", fs, "\": ext4 or xfs"));
  }

  absl::Status Create(const std::string& name, uint64_t size_bytes, const std::string& fs) override {
    ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->CreateThin(Thin(name), size_bytes, /*activate=*/true));
    absl::Status made;
    if (fs == "xfs") {
      // -K: the new thin device reads as zeros; discarding it is wasted work.
      absl::StatusOr<thinpool::ExecResult> r =
          thinpool::RunProgram({*thinpool::FindProgram("mkfs.xfs"), "-q", "-K", info.device});
      if (!r.ok()) {
        made = r.status();
      } else if (r->exit_code != 0) {
        made = absl::InternalError(absl::StrCat("mkfs.xfs ", info.device, " exited ",
                                                r->exit_code, ": ", r->output));
      }
    } else {
      thinpool::Ext4Options eo;
      eo.assume_zeroed = true;
      made = base::Annotate(thinpool::MakeExt4(info.device, eo), "making the volume's ext4");
    }
    absl::Status off = pool_->DeactivateThin(Thin(name));
    RETURN_IF_ERROR(made);
    return off;
  }

  absl::Status Snapshot(const std::string& source, const std::string& name, uint64_t) override {
    // An active origin is suspended (its filesystem frozen) around the
    // snapshot, so a mounted source gives a consistent copy.
    return pool_->Snapshot(Thin(source), Thin(name), /*activate=*/false).status();
  }

  absl::Status Remove(const std::string& name) override {
    RETURN_IF_ERROR(Unmount(name));
    absl::StatusOr<thinpool::ThinInfo> info = pool_->GetThinInfo(Thin(name));
    if (!info.ok()) {
      if (absl::IsNotFound(info.status())) return absl::OkStatus();
      return info.status();
    }
    thinpool::DeleteOptions opts;
    opts.discard = true;  // give a file-backed pool's space back
    return pool_->DeleteThin(Thin(name), opts);
  }

  absl::StatusOr<std::vector<std::string>> ListNames() override {
    ASSIGN_OR_RETURN(std::vector<thinpool::ThinInfo> thins, pool_->ListThins());
    std::vector<std::string> names;
    for (const thinpool::ThinInfo& t : thins) {
      if (absl::StartsWith(t.name, kThinPrefix)) names.push_back(t.name.substr(sizeof(kThinPrefix) - 1));
    }
    return names;
  }

  absl::StatusOr<std::string> Mount(const std::string& name, const std::string& fs) override {
    std::string mnt = DataPath(name);
    if (::mkdir(mnt.c_str(), 0755) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("mkdir ", mnt));
    }
    ASSIGN_OR_RETURN(bool mounted, Mounted(name));
    if (mounted) return mnt;
    ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->ActivateThin(Thin(name)));
    // xfs refuses a second filesystem with the same uuid (a snapshot's).
    const char* data = fs == "xfs" ? "nouuid" : nullptr;
    if (::mount(info.device.c_str(), mnt.c_str(), fs.c_str(), MS_NODEV, data) != 0) {
      int err = errno;
      (void)pool_->DeactivateThin(Thin(name));
      return base::ErrnoError(err, absl::StrCat("mount ", info.device, " on ", mnt));
    }
    return mnt;
  }

  absl::Status Unmount(const std::string& name) override {
    std::string mnt = DataPath(name);
    ASSIGN_OR_RETURN(bool mounted, Mounted(name));
    if (mounted && ::umount2(mnt.c_str(), UMOUNT_NOFOLLOW) != 0) {
      return base::ErrnoError(errno, absl::StrCat("unmounting volume at ", mnt));
    }
    absl::StatusOr<thinpool::ThinInfo> info = pool_->GetThinInfo(Thin(name));
    if (info.ok() && info->active) RETURN_IF_ERROR(pool_->DeactivateThin(Thin(name)));
    if (::rmdir(mnt.c_str()) != 0 && errno != ENOENT) {
      return base::ErrnoError(errno, absl::StrCat("rmdir ", mnt));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Mounted(const std::string& name) override {
    absl::StatusOr<bool> m = base::IsMountPoint(DataPath(name));
    if (!m.ok() && base::HasErrno(m.status(), ENOENT)) return false;
    return m;
  }
  std::string DataPath(const std::string& name) const override {
    return absl::StrCat(mnt_dir_, "/", name);
  }
  bool NeedsMount() const override { return true; }

  absl::StatusOr<Usage> GetUsage(const std::string& name, uint64_t size_bytes) override {
    ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->GetThinInfo(Thin(name)));
    bool was_active = info.active;
    if (!was_active) {
      ASSIGN_OR_RETURN(info, pool_->ActivateThin(Thin(name)));
    }
    Usage usage;
    usage.size_bytes = size_bytes;
    usage.used_bytes = info.mapped_bytes.value_or(0);
    if (!was_active) RETURN_IF_ERROR(pool_->DeactivateThin(Thin(name)));
    return usage;
  }

  // Idempotent, so an interrupted grow is finished by doing it again: the
  // thin grows first (ResizeThin records the size, then reloads an active
  // table), then the filesystem grows online to fill it (mounted here if
  // it was not).
  absl::Status Grow(const std::string& name, const std::string& fs, uint64_t,
                    uint64_t new_size) override {
    ASSIGN_OR_RETURN(bool was_mounted, Mounted(name));
    RETURN_IF_ERROR(pool_->ResizeThin(Thin(name), new_size).status());
    ASSIGN_OR_RETURN(std::string mnt, Mount(name, fs));
    absl::Status grown = GrowFilesystem(name, fs, mnt);
    if (!was_mounted) {
      absl::Status off = Unmount(name);
      if (grown.ok()) grown = off;
    }
    return grown;
  }

 private:
  static std::string Thin(const std::string& name) { return kThinPrefix + name; }

  // Grows the mounted filesystem to the device's size: resize2fs online
  // (ext4), xfs_growfs -d (xfs).
  absl::Status GrowFilesystem(const std::string& name, const std::string& fs,
                              const std::string& mnt) {
    std::vector<std::string> argv;
    if (fs == "xfs") {
      std::optional<std::string> prog = thinpool::FindProgram("xfs_growfs");
      if (!prog) return absl::FailedPreconditionError("growing xfs needs xfs_growfs (xfsprogs)");
      argv = {*prog, "-d", mnt};
    } else {
      std::optional<std::string> prog = thinpool::FindProgram("resize2fs");
      if (!prog) return absl::FailedPreconditionError("growing ext4 needs resize2fs (e2fsprogs)");
      ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->GetThinInfo(Thin(name)));
      argv = {*prog, info.device};
    }
    ASSIGN_OR_RETURN(thinpool::ExecResult r, thinpool::RunProgram(argv));
    if (r.exit_code != 0) {
      return absl::InternalError(absl::StrCat("growing volume ", name, "'s ", fs, ": ", argv[0],
                                              " exited ", r.exit_code, ": ", r.output));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
  std::unique_ptr<thinpool::Pool> pool_;
  std::string mnt_dir_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<VolumeBackend>> NewThinBackend(const std::string& state_dir,
                                                              const std::string& pool,
                                                              const std::string& mnt_dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<dm::Control> dm, dm::Control::Open());
  ASSIGN_OR_RETURN(std::unique_ptr<thinpool::StateDir> state,
                   thinpool::StateDir::Open(state_dir.empty() ? thinpool::kDefaultStateDir : state_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<thinpool::Pool> p, thinpool::Pool::Open(*state, *dm, pool));
  RETURN_IF_ERROR(p->Activate());
  return std::unique_ptr<VolumeBackend>(
      new ThinBackend(std::move(dm), std::move(state), std::move(p), mnt_dir));
}

}  // namespace volume
