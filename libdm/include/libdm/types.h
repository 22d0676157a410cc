// Typed values at the device-mapper boundary: validated device names and
// uuids, device numbers, and distinct unit types for sizes.
#ifndef DMTHIN_LIBDM_TYPES_H_
#define DMTHIN_LIBDM_TYPES_H_

#include <sys/types.h>

#include <compare>
#include <cstdint>
#include <string>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace dm {

// A device-mapper device name: 1..127 bytes, no '/', no control characters,
// not ".", ".." or "control" (the kernel's own rules plus printable bytes).
class Name {
 public:
  static absl::StatusOr<Name> Create(absl::string_view name);
  // For constants known to be valid; aborts on an invalid name.
  static Name OrDie(absl::string_view name);

  const std::string& str() const { return value_; }
  auto operator<=>(const Name&) const = default;

 private:
  explicit Name(std::string v) : value_(std::move(v)) {}
  std::string value_;
};

// A device-mapper uuid: 1..128 bytes, no control characters.
class Uuid {
 public:
  static absl::StatusOr<Uuid> Create(absl::string_view uuid);
  static Uuid OrDie(absl::string_view uuid);

  const std::string& str() const { return value_; }
  auto operator<=>(const Uuid&) const = default;

 private:
  explicit Uuid(std::string v) : value_(std::move(v)) {}
  std::string value_;
};

// A block device number (major:minor).
struct DevNum {
  uint32_t major = 0;
  uint32_t minor = 0;

  // The userspace dev_t (makedev).
  dev_t ToDevT() const;
  static DevNum FromDevT(dev_t dev);
  // The kernel's 64-bit encoding used in dm_ioctl.dev and the deps/name
  // lists (huge_encode_dev: 12-bit major, 20-bit minor).
  uint64_t ToKernel() const;
  static DevNum FromKernel(uint64_t dev);
  // "MAJ:MIN", the form device-mapper tables use.
  std::string ToString() const;
  static absl::StatusOr<DevNum> Parse(absl::string_view s);
  // The device number of a block special file (follows symlinks).
  static absl::StatusOr<DevNum> FromPath(const std::string& path);

  bool operator==(const DevNum&) const = default;
  auto operator<=>(const DevNum&) const = default;
};

// Distinct unit types: a count of one unit never converts silently into
// another. Arithmetic within one unit only.
template <typename Tag>
class Quantity {
 public:
  constexpr Quantity() = default;
  constexpr explicit Quantity(uint64_t v) : v_(v) {}
  constexpr uint64_t value() const { return v_; }
  constexpr auto operator<=>(const Quantity&) const = default;
  constexpr Quantity operator+(Quantity o) const { return Quantity(v_ + o.v_); }
  constexpr Quantity operator-(Quantity o) const { return Quantity(v_ - o.v_); }
  constexpr Quantity& operator+=(Quantity o) {
    v_ += o.v_;
    return *this;
  }

 private:
  uint64_t v_ = 0;
};

struct SectorsTag {};
struct DataBlocksTag {};
struct MetaBlocksTag {};
// 512-byte sectors.
using Sectors = Quantity<SectorsTag>;
// Thin-pool data blocks (of the pool's block size).
using DataBlocks = Quantity<DataBlocksTag>;
// Thin-pool metadata blocks (4 KiB each).
using MetaBlocks = Quantity<MetaBlocksTag>;

inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint64_t kMetaBlockSize = 4096;
constexpr Sectors SectorsFromBytes(uint64_t bytes) { return Sectors(bytes / kSectorSize); }
constexpr uint64_t BytesOf(Sectors s) { return s.value() * kSectorSize; }

// How a request names an existing device: by name, by uuid or by number.
class DevId {
 public:
  DevId(Name name) : id_(std::move(name)) {}  // NOLINT: implicit by design
  DevId(Uuid uuid) : id_(std::move(uuid)) {}  // NOLINT
  DevId(DevNum dev) : id_(dev) {}             // NOLINT

  const Name* name() const { return std::get_if<Name>(&id_); }
  const Uuid* uuid() const { return std::get_if<Uuid>(&id_); }
  const DevNum* dev() const { return std::get_if<DevNum>(&id_); }
  // "name=X", "uuid=X" or "dev=M:N", for messages.
  std::string ToString() const;

 private:
  std::variant<Name, Uuid, DevNum> id_;
};

// A three-part version: the dm ioctl interface's (DM_VERSION) or a
// target's (LIST_VERSIONS / GET_TARGET_VERSION).
struct Version {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint32_t patch = 0;
  auto operator<=>(const Version&) const = default;
  std::string ToString() const;
};

}  // namespace dm
DMTHIN_API_END

#endif  // DMTHIN_LIBDM_TYPES_H_
