// Pool::Check: registry against kernel metadata, with thin-provisioning-tools
// (thin_dump, thin_check, thin_repair) as the independent reader of the
// on-disk metadata.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/size.h"
#include "base/status.h"
#include "thinpool/exec.h"
#include "thinpool/loop_device.h"
#include "thinpool/pool.h"

namespace thinpool {
namespace {

// Device ids in thin_dump's XML: <device dev_id="N" ...>.
std::set<uint32_t> DumpedIds(const std::string& xml) {
  std::set<uint32_t> ids;
  static constexpr char kTag[] = "<device dev_id=\"";
  static constexpr size_t kTagLen = sizeof(kTag) - 1;
  for (size_t pos = xml.find(kTag); pos != std::string::npos; pos = xml.find(kTag, pos)) {
    pos += kTagLen;
    size_t end = xml.find('"', pos);
    uint32_t id = 0;
    if (end != std::string::npos &&
        absl::SimpleAtoi(absl::string_view(xml).substr(pos, end - pos), &id))
      ids.insert(id);
  }
  return ids;
}

// thin_dump's device list without the mappings (whose XML grows with the
// data; ids are all Check compares): ~110 bytes a device, so 256 MiB is
// ~2.4 million devices. (A 1 MiB cap once cut the list at ~9,700 devices and
// reported the rest missing from the kernel.)
constexpr size_t kMaxDumpBytes = size_t{256} << 20;

std::string FirstLine(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  return line.size() > 200 ? line.substr(0, 200) + "..." : line;
}

}  // namespace

absl::StatusOr<CheckReport> Pool::Check(bool repair) {
  CheckReport report;
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  // Resumes the pool device if a dead process left it suspended (reported
  // below with the other actions).
  ASSIGN_OR_RETURN(std::optional<dm::DeviceInfo> pool_dev, PoolDeviceLocked());
  const bool active = pool_dev.has_value();
  ASSIGN_OR_RETURN(auto pending, state_.registry().GetPending(name_));
  const auto thin_dump = FindProgram("thin_dump");

  // The metadata as the kernel reads it: the loop device of a file (the file
  // itself may be behind the loop's direct I/O), or the block device.
  std::string meta_node = rec.metadata_path;
  if (rec.backing == PoolBacking::kFiles && active) {
    ASSIGN_OR_RETURN(auto loop, LoopDevice::FindByBackingFile(rec.metadata_path));
    if (loop.has_value()) meta_node = loop->path();
  }

  std::optional<std::set<uint32_t>> kernel_ids;
  if (active) {
    // Devices a dead process left suspended are resumed whether or not
    // asked to repair (they hang all I/O); reported with what Open resumed.
    RETURN_IF_ERROR(ResumeThinsLeftSuspended());
    for (std::string& done : TakeRecovered()) report.actions.push_back(std::move(done));
    ASSIGN_OR_RETURN(dm::ThinPoolStatus k, KernelStatus());
    if (!k.ok()) {
      report.findings.push_back(absl::StrCat(
          "the kernel has failed the pool: deactivate it, then 'dmthin pool check ", name_,
          " --repair'"));
      return report;
    }
    if (k.needs_check)
      report.findings.push_back(absl::StrCat(
          "the kernel flags the metadata needs_check: deactivate the pool, then 'dmthin pool "
          "check ", name_, " --repair'"));
    // Full data or metadata: only growing helps, never --repair.
    const bool metadata_full = k.used_metadata.value() + 8 >= k.total_metadata.value();
    if (k.mode == dm::ThinPoolStatus::Mode::kReadOnly)
      report.findings.push_back(
          metadata_full
              ? absl::StrCat("the pool is read-only: its metadata is full (",
                             k.used_metadata.value(), "/", k.total_metadata.value(),
                             " blocks); grow it: 'dmthin pool resize ", name_,
                             " --metadata-size SIZE'")
              : absl::StrCat("the pool is read-only (metadata trouble): deactivate it, then "
                             "'dmthin pool check ", name_, " --repair'"));
    if (k.mode == dm::ThinPoolStatus::Mode::kOutOfDataSpace ||
        k.used_data.value() >= k.total_data.value())
      report.findings.push_back(absl::StrCat(
          "the pool's data is full (", k.used_data.value(), "/", k.total_data.value(),
          " blocks", k.mode == dm::ThinPoolStatus::Mode::kOutOfDataSpace ? ", out of data space" : "",
          "): grow it: 'dmthin pool resize ", name_, " --data-size SIZE' (more than ",
          base::FormatSize(rec.data_bytes), ")"));
    if (pending.has_value()) {
      std::string what = absl::StrCat("an interrupted ", OpKindName(pending->kind), " of device ",
                                      pending->dev_id);
      if (repair) {
        ASSIGN_OR_RETURN(std::string done, ReconcileLocked());
        report.actions.push_back(done.empty() ? "resolved " + what : done);
        pending.reset();
      } else {
        report.findings.push_back(what + " is pending (--repair finishes or undoes it)");
        report.repairable = true;
      }
    } else if (k.transaction_id != rec.transaction_id) {
      report.findings.push_back(absl::StrCat(
          "the registry is at transaction ", rec.transaction_id, " but the pool's metadata at ",
          k.transaction_id, " with nothing pending: the registry does not belong to this pool's "
          "metadata (restored from a backup?)"));
    }
    if (thin_dump) {
      // A metadata snapshot gives thin_dump a consistent view of a live pool.
      RETURN_IF_ERROR(SendMessage(dm::thin_msg::ReserveMetadataSnap{}));
      auto dumped = RunProgram({*thin_dump, "--skip-mappings", "--metadata-snap", meta_node},
                               kMaxDumpBytes);
      absl::Status released = SendMessage(dm::thin_msg::ReleaseMetadataSnap{});
      if (!dumped.ok()) return dumped.status();
      if (dumped->exit_code != 0)
        report.notes.push_back("thin_dump of the metadata snapshot failed: " +
                               FirstLine(dumped->output));
      else if (dumped->truncated)
        report.notes.push_back("thin_dump printed more than 256 MiB: thin ids not compared");
      else
        kernel_ids = DumpedIds(dumped->output);
      RETURN_IF_ERROR(released);
    }
    report.notes.push_back(
        "thin_check reads only inactive metadata; the kernel's needs_check flag covers an "
        "active pool");
  } else {
    if (pending.has_value())
      report.findings.push_back(absl::StrCat(
          "an interrupted ", OpKindName(pending->kind), " of device ", pending->dev_id,
          " is pending: activating the pool ('dmthin pool activate ", name_, "') resolves it"));
    struct stat st;
    if (stat(rec.metadata_path.c_str(), &st) != 0) {
      report.findings.push_back(absl::StrCat("the metadata ", rec.metadata_path, " is missing"));
      return report;
    }
    if (auto thin_check = FindProgram("thin_check")) {
      ASSIGN_OR_RETURN(ExecResult r, RunProgram({*thin_check, "-q", rec.metadata_path}));
      if (r.exit_code != 0) {
        const std::string problem =
            absl::StrCat("thin_check rejects the metadata: ", FirstLine(r.output));
        if (repair && rec.backing == PoolBacking::kFiles) {
          RETURN_IF_ERROR(RepairMetadataFile(rec, &report));
        } else if (repair) {
          report.findings.push_back(absl::StrCat(
              problem, "; for a device-backed pool run: thin_repair -i ", rec.metadata_path,
              " -o <spare device>, then recreate the pool's record on it"));
        } else {
          report.findings.push_back(problem + " (--repair rebuilds it with thin_repair)");
          if (rec.backing == PoolBacking::kFiles) report.repairable = true;
        }
      }
    } else {
      report.notes.push_back("thin_check is not installed (thin-provisioning-tools)");
    }
    if (thin_dump) {
      auto dumped = RunProgram({*thin_dump, "--skip-mappings", rec.metadata_path}, kMaxDumpBytes);
      if (!dumped.ok()) return dumped.status();
      if (dumped->exit_code == 0 && dumped->truncated)
        report.notes.push_back("thin_dump printed more than 256 MiB: thin ids not compared");
      else if (dumped->exit_code == 0)
        kernel_ids = DumpedIds(dumped->output);
    }
  }

  if (!thin_dump) report.notes.push_back("thin_dump is not installed: thin ids not compared");
  if (kernel_ids.has_value()) {
    ASSIGN_OR_RETURN(auto thins, state_.registry().ListThins(name_));
    ASSIGN_OR_RETURN(auto quarantined, state_.registry().ListQuarantined(name_));
    std::set<uint32_t> known;
    for (const auto& q : quarantined) known.insert(q.dev_id);
    for (const auto& t : thins) {
      known.insert(t.dev_id);
      // A device mid-operation may legitimately be missing or present.
      if (t.state == ThinState::kReady && !kernel_ids->count(t.dev_id))
        report.findings.push_back(absl::StrCat(
            "thin device ", t.name, " (id ", t.dev_id, ") is in the registry but not in the "
            "pool's metadata; 'dmthin thin delete ", name_, " ", t.name, "' drops the record"));
    }
    for (uint32_t id : *kernel_ids) {
      if (known.count(id)) continue;
      if (repair) {
        RETURN_IF_ERROR(state_.registry().Quarantine(
            name_, id, "found in the pool's metadata but not in the registry (pool check)"));
        report.actions.push_back(absl::StrCat(
            "quarantined device id ", id, " (in the metadata, unknown to the registry); it is "
            "deleted at the pool's next activation"));
      } else {
        report.findings.push_back(absl::StrCat(
            "device id ", id, " is in the pool's metadata but not in the registry (--repair "
            "quarantines it)"));
        report.repairable = true;
      }
    }
  }
  return report;
}

absl::Status Pool::RepairMetadataFile(const PoolRecord& rec, CheckReport* report) {
  auto thin_repair = FindProgram("thin_repair");
  if (!thin_repair) {
    report->findings.push_back(
        "thin_check rejects the metadata and thin_repair is not installed (thin-provisioning-tools)");
    return absl::OkStatus();
  }
  const std::string repaired = rec.metadata_path + ".repaired";
  const std::string damaged = absl::StrCat(rec.metadata_path, ".damaged-", std::time(nullptr));
  std::error_code ec;
  std::filesystem::remove(repaired, ec);
  {
    // thin_repair writes into an existing file of the metadata's size.
    base::UniqueFd fd(::open(repaired.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
    if (!fd.valid()) return base::ErrnoError(errno, absl::StrCat("creating ", repaired));
    if (::ftruncate(fd.get(), static_cast<off_t>(rec.metadata_bytes)) != 0)
      return base::ErrnoError(errno, absl::StrCat("sizing ", repaired));
  }
  ASSIGN_OR_RETURN(ExecResult r, RunProgram({*thin_repair, "-i", rec.metadata_path, "-o", repaired}));
  if (r.exit_code != 0) {
    std::filesystem::remove(repaired, ec);
    report->findings.push_back(absl::StrCat("thin_repair could not rebuild the metadata: ",
                                            FirstLine(r.output)));
    return absl::OkStatus();
  }
  auto thin_check = FindProgram("thin_check");
  if (thin_check) {
    ASSIGN_OR_RETURN(ExecResult c, RunProgram({*thin_check, "-q", repaired}));
    if (c.exit_code != 0) {
      std::filesystem::remove(repaired, ec);
      report->findings.push_back("thin_repair's output still fails thin_check: " +
                                 FirstLine(c.output));
      return absl::OkStatus();
    }
  }
  if (::rename(rec.metadata_path.c_str(), damaged.c_str()) != 0)
    return base::ErrnoError(errno, absl::StrCat("keeping the damaged metadata as ", damaged));
  if (::rename(repaired.c_str(), rec.metadata_path.c_str()) != 0)
    return base::ErrnoError(errno, absl::StrCat("putting the repaired metadata in place (the "
                                                "damaged file is ", damaged, ")"));
  report->actions.push_back(absl::StrCat("rebuilt the metadata with thin_repair; the damaged "
                                         "file is kept as ", damaged));
  return absl::OkStatus();
}

}  // namespace thinpool
