// Device-mapper tables: a list of targets with typed parameters.
//
// Formatting produces exactly the text the kernel reports for the table
// (DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG, `dmsetup table`), and parsing
// that text gives back an equal Table, so a device whose live table equals
// the wanted one can be adopted: Table::Parse(live) == wanted.
#ifndef DMTHIN_LIBDM_TABLE_H_
#define DMTHIN_LIBDM_TABLE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "libdm/types.h"

DMTHIN_API_BEGIN
namespace dm {

// linear: <dev> <offset>
struct LinearTarget {
  DevNum device;
  Sectors offset;
  bool operator==(const LinearTarget&) const = default;
};

// zero, error: no parameters.
struct ZeroTarget {
  bool operator==(const ZeroTarget&) const = default;
};
struct ErrorTarget {
  bool operator==(const ErrorTarget&) const = default;
};

// thin-pool: <meta dev> <data dev> <block size> <low water mark> [n features]
struct ThinPoolTarget {
  DevNum metadata;
  DevNum data;
  Sectors block_size;       // 128..2097152, a multiple of 128
  DataBlocks low_water_mark;
  bool skip_block_zeroing = false;
  bool ignore_discard = false;
  bool no_discard_passdown = false;
  bool read_only = false;
  bool error_if_no_space = false;
  bool operator==(const ThinPoolTarget&) const = default;
};

// thin: <pool dev> <dev id> [external origin dev]
struct ThinTarget {
  DevNum pool;
  uint32_t device_id = 0;  // 24-bit
  std::optional<DevNum> external_origin;
  bool operator==(const ThinTarget&) const = default;
};

// flakey: <dev> <offset> <up interval> <down interval> [n features]
// For fault-injection tests.
struct FlakeyTarget {
  enum class DownMode { kFailAll, kDropWrites, kErrorWrites };
  struct CorruptBioByte {
    uint32_t nth_byte = 1;  // 1-based
    bool on_write = false;  // 'w' or 'r'
    uint32_t value = 0;     // 0..255
    uint32_t bio_flags = 0;
    bool operator==(const CorruptBioByte&) const = default;
  };
  DevNum device;
  Sectors offset;
  uint32_t up_interval = 0;    // seconds
  uint32_t down_interval = 0;  // seconds
  DownMode down_mode = DownMode::kFailAll;
  std::optional<CorruptBioByte> corrupt;
  bool operator==(const FlakeyTarget&) const = default;
};

// Any other target type, kept verbatim (params as the kernel reports them,
// without trailing spaces). Params must not contain backslashes or NULs.
struct OtherTarget {
  std::string type;
  std::string params;
  bool operator==(const OtherTarget&) const = default;
};

using TargetParams = std::variant<LinearTarget, ZeroTarget, ErrorTarget,
                                  ThinPoolTarget, ThinTarget, FlakeyTarget,
                                  OtherTarget>;

struct Target {
  Sectors start;
  Sectors length;
  TargetParams params;

  // "linear", "thin-pool", ...
  std::string type() const;
  // The parameter text, exactly as the kernel reports it.
  std::string FormatParams() const;
  // Checks value ranges (block size, device id, ...).
  absl::Status Validate() const;

  // Parses params of `type`; unknown types become OtherTarget.
  static absl::StatusOr<Target> Parse(Sectors start, Sectors length,
                                      absl::string_view type,
                                      absl::string_view params);
  bool operator==(const Target&) const = default;
};

class Table {
 public:
  Table() = default;
  explicit Table(std::vector<Target> targets) : targets_(std::move(targets)) {}
  // A one-target table covering [0, length).
  static Table Single(Sectors length, TargetParams params) {
    return Table({Target{Sectors(0), length, std::move(params)}});
  }

  const std::vector<Target>& targets() const { return targets_; }
  std::vector<Target>& targets() { return targets_; }
  bool empty() const { return targets_.empty(); }
  // Sum of lengths (end of the last target).
  Sectors size() const;

  // Targets must be non-empty, start at 0, be contiguous and have length > 0,
  // and each target's params must be in range.
  absl::Status Validate() const;

  // `dmsetup table` text: "start length type params\n" per target.
  std::string ToString() const;
  // Parses `dmsetup table` text (one target per line, blank lines ignored).
  static absl::StatusOr<Table> ParseText(absl::string_view text);

  bool operator==(const Table&) const = default;

 private:
  std::vector<Target> targets_;
};

}  // namespace dm
DMTHIN_API_END

#endif  // DMTHIN_LIBDM_TABLE_H_
