// dm-thin specifics: typed status of thin-pool and thin targets, and the
// pool's messages (Documentation/admin-guide/device-mapper/thin-provisioning.rst).
#ifndef DMTHIN_LIBDM_THIN_H_
#define DMTHIN_LIBDM_THIN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "libdm/types.h"

DMTHIN_API_BEGIN
namespace dm {

// Thin device ids are 24-bit.
inline constexpr uint32_t kMaxThinDeviceId = (1u << 24) - 1;

// Status of a thin-pool target:
//   <transaction id> <used>/<total meta> <used>/<total data> <held root|->
//   ro|rw|out_of_data_space [no_]discard_passdown|ignore_discard
//   error|queue_if_no_space needs_check|- <metadata low watermark>
// or "Fail" (pool failed) or "Error" (status could not be read). Kernels
// before the last fields existed stop early: those fields are then unset.
struct ThinPoolStatus {
  enum class Health { kOk, kFail, kError };
  enum class Mode { kReadWrite, kReadOnly, kOutOfDataSpace };
  enum class Discard { kPassdown, kNoPassdown, kIgnore };
  enum class NoSpace { kQueue, kError };

  Health health = Health::kOk;
  // The rest is meaningful only when health == kOk.
  uint64_t transaction_id = 0;
  MetaBlocks used_metadata;
  MetaBlocks total_metadata;
  DataBlocks used_data;
  DataBlocks total_data;
  std::optional<uint64_t> held_metadata_root;  // a reserved metadata snapshot
  Mode mode = Mode::kReadWrite;
  std::optional<Discard> discard;
  std::optional<NoSpace> no_space;
  bool needs_check = false;
  std::optional<MetaBlocks> metadata_low_watermark;

  bool ok() const { return health == Health::kOk; }
  bool operator==(const ThinPoolStatus&) const = default;
};
absl::StatusOr<ThinPoolStatus> ParseThinPoolStatus(absl::string_view text);
// The kernel's text for a status (round-trips with the parser).
std::string FormatThinPoolStatus(const ThinPoolStatus& status);

// Status of a thin target: "<mapped sectors> <highest mapped sector|->",
// "-" (device being deleted / not open), "Fail" or "Error".
struct ThinStatus {
  enum class Health { kOk, kFail, kError, kUnavailable };
  Health health = Health::kOk;
  Sectors mapped;
  std::optional<Sectors> highest_mapped;  // unset when nothing is mapped
  bool ok() const { return health == Health::kOk; }
  bool operator==(const ThinStatus&) const = default;
};
absl::StatusOr<ThinStatus> ParseThinStatus(absl::string_view text);
std::string FormatThinStatus(const ThinStatus& status);

// Messages to a thin-pool (sent with DM_TARGET_MSG at sector 0).
namespace thin_msg {
struct CreateThin {
  uint32_t id;
};
struct CreateSnap {
  uint32_t id;
  uint32_t origin_id;  // suspend an active origin around this message
};
struct Delete {
  uint32_t id;
};
// Compare-and-swap: fails unless the pool's id is `current`.
struct SetTransactionId {
  uint64_t current;
  uint64_t next;
};
struct ReserveMetadataSnap {};
struct ReleaseMetadataSnap {};
}  // namespace thin_msg

using ThinPoolMessage =
    std::variant<thin_msg::CreateThin, thin_msg::CreateSnap, thin_msg::Delete,
                 thin_msg::SetTransactionId, thin_msg::ReserveMetadataSnap,
                 thin_msg::ReleaseMetadataSnap>;

// "create_thin 5", ...; rejects ids over 24 bits and snapshots of themselves.
absl::StatusOr<std::string> FormatThinPoolMessage(const ThinPoolMessage& message);

}  // namespace dm
DMTHIN_API_END

#endif  // DMTHIN_LIBDM_THIN_H_
