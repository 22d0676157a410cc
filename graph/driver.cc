// Small shared pieces of the driver interface: names, typed "unsupported"
// statuses, id validation.
#include "graph/driver.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace graph {
namespace {
constexpr absl::string_view kUnsupportedPayload = "dmthin.graph.unsupported";
}  // namespace

const char* ChangeKindName(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kModify: return "modify";
    case ChangeKind::kAdd: return "add";
    case ChangeKind::kDelete: return "delete";
  }
  return "unknown";
}

absl::StatusOr<DiskUsage> Driver::Usage(const std::string& id, const std::string& parent) {
  absl::StatusOr<std::vector<Change>> changes = Changes(id, parent);
  if (!changes.ok()) return changes.status();
  absl::StatusOr<int64_t> bytes = DiffSize(id, parent);
  if (!bytes.ok()) return bytes.status();
  DiskUsage usage;
  usage.bytes = *bytes;
  for (const Change& c : *changes) usage.inodes += c.kind == ChangeKind::kDelete ? 0 : 1;
  return usage;
}

absl::Status Driver::CheckDerived(bool, std::vector<std::string>*, std::vector<std::string>*) {
  return absl::OkStatus();
}

const char* UnsupportedName(Unsupported reason) {
  switch (reason) {
    case Unsupported::kKernelLacksFilesystem: return "kernel-lacks-filesystem";
    case Unsupported::kBackingFilesystem: return "backing-filesystem";
    case Unsupported::kKernelLacksFeature: return "kernel-lacks-feature";
    case Unsupported::kPrivilege: return "privilege";
    case Unsupported::kConfiguration: return "configuration";
  }
  return "unknown";
}

absl::Status UnsupportedError(Unsupported reason, absl::string_view detail) {
  absl::Status status = absl::FailedPreconditionError(
      absl::StrCat("not supported (", UnsupportedName(reason), "): ", detail));
  status.SetPayload(kUnsupportedPayload,
                    absl::Cord(std::to_string(static_cast<int>(reason))));
  return status;
}

std::optional<Unsupported> GetUnsupported(const absl::Status& status) {
  auto payload = status.GetPayload(kUnsupportedPayload);
  if (!payload.has_value()) return std::nullopt;
  std::string s(*payload);
  int v = std::atoi(s.c_str());
  if (v < 1 || v > 5) return std::nullopt;
  return static_cast<Unsupported>(v);
}

absl::Status ValidateLayerId(absl::string_view id) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer id must be 1..128 bytes, got ", id.size()));
  }
  if (id == "." || id == ".." || id[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid layer id \"", id, "\""));
  }
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid layer id \"", absl::CHexEscape(id),
          "\": only [A-Za-z0-9_.-] allowed"));
    }
  }
  return absl::OkStatus();
}

}  // namespace graph
