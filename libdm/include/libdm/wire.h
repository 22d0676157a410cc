// The device-mapper ioctl wire format (<linux/dm-ioctl.h>): the command
// table, request encoding and response decoding. Pure functions on byte
// buffers, no system calls: Control uses them, and the unit tests and fuzz
// targets drive them directly.
#ifndef DMTHIN_LIBDM_WIRE_H_
#define DMTHIN_LIBDM_WIRE_H_

#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "libdm/types.h"

DMTHIN_API_BEGIN
namespace dm {

// The 18 ioctl commands, numbered as the kernel numbers them.
enum class Command : uint32_t {
  kVersion = DM_VERSION_CMD,
  kRemoveAll = DM_REMOVE_ALL_CMD,
  kListDevices = DM_LIST_DEVICES_CMD,
  kDevCreate = DM_DEV_CREATE_CMD,
  kDevRemove = DM_DEV_REMOVE_CMD,
  kDevRename = DM_DEV_RENAME_CMD,
  kDevSuspend = DM_DEV_SUSPEND_CMD,
  kDevStatus = DM_DEV_STATUS_CMD,
  kDevWait = DM_DEV_WAIT_CMD,
  kTableLoad = DM_TABLE_LOAD_CMD,
  kTableClear = DM_TABLE_CLEAR_CMD,
  kTableDeps = DM_TABLE_DEPS_CMD,
  kTableStatus = DM_TABLE_STATUS_CMD,
  kListVersions = DM_LIST_VERSIONS_CMD,
  kTargetMsg = DM_TARGET_MSG_CMD,
  kDevSetGeometry = DM_DEV_SET_GEOMETRY_CMD,
  kDevArmPoll = DM_DEV_ARM_POLL_CMD,
  kGetTargetVersion = DM_GET_TARGET_VERSION_CMD,
};
inline constexpr int kCommandCount = 18;

// What the library knows about each command.
struct CommandInfo {
  Command command;
  unsigned long request;   // the ioctl request number (DM_VERSION, ...)
  const char* name;        // "DM_VERSION", ...
  Version min_version;     // the interface version the command needs
  uint32_t accepted_flags; // flags a caller may pass in
  // The command can return data after the header, so it gets a full-size
  // buffer (others send only header + payload: less to copy).
  bool returns_data;
  // DM_BUFFER_FULL_FLAG may be answered by repeating the command with a
  // larger buffer (read-only commands: repeating does no harm).
  bool retry_when_full;
  // event_nr carries a udev cookie on input (suspend/resume, remove, rename).
  bool takes_cookie;
  // The device is named in the header (name, uuid or dev).
  bool needs_device;
};
const CommandInfo& GetCommandInfo(Command command);

// Minimum interface versions for input flags newer than the commands that
// take them (e.g. DM_DEFERRED_REMOVE needs 4.27).
Version MinVersionForFlags(uint32_t flags);

namespace wire {

inline constexpr size_t kHeaderSize = sizeof(struct dm_ioctl);  // 312
inline constexpr size_t kTargetSpecSize = sizeof(struct dm_target_spec);  // 40
inline constexpr size_t kInitialBufferSize = 16 * 1024;
inline constexpr size_t kDefaultMaxBufferSize = 64 * 1024 * 1024;

constexpr size_t Align8(size_t n) { return (n + 7) & ~size_t{7}; }

// An 8-byte aligned, growable byte buffer holding one dm_ioctl request or
// response. Reused between calls (thread-local in Control).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t size) { Resize(size); }

  // Ensures capacity for `size` bytes and sets the logical size. Contents are
  // unspecified (Encode zeroes what it uses).
  void Resize(size_t size);
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  // Drops storage above `keep` bytes.
  void ShrinkTo(size_t keep);

  uint8_t* data() { return reinterpret_cast<uint8_t*>(storage_.get()); }
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(storage_.get()); }
  std::span<const uint8_t> bytes() const { return {data(), size_}; }
  struct dm_ioctl* header() { return reinterpret_cast<struct dm_ioctl*>(data()); }
  const struct dm_ioctl* header() const {
    return reinterpret_cast<const struct dm_ioctl*>(data());
  }

 private:
  std::unique_ptr<uint64_t[]> storage_;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

// One target of a TABLE_LOAD request, already formatted.
struct TargetSpec {
  uint64_t start = 0;   // sectors
  uint64_t length = 0;  // sectors
  std::string type;     // < 16 bytes
  std::string params;
};

// Everything one ioctl sends. Only the fields the command uses are encoded.
struct Request {
  Command command = Command::kVersion;
  // Header name: the device's name (the new one on create), or the target
  // type for GET_TARGET_VERSION.
  std::string name;
  std::string uuid;  // header uuid
  uint64_t dev = 0;  // header dev, kernel encoding
  uint32_t flags = 0;
  uint32_t event_nr = 0;  // DEV_WAIT event number, or udev cookie
  std::vector<TargetSpec> targets;  // TABLE_LOAD
  // DEV_RENAME new name/uuid, DEV_SET_GEOMETRY "c h s start", TARGET_MSG
  // message text.
  std::string text;
  uint64_t message_sector = 0;  // TARGET_MSG
};

// Bytes of header + payload the request needs (before any result space).
absl::StatusOr<size_t> EncodedSize(const Request& request);

// Encodes `request` into `buffer`, sized max(EncodedSize, buffer_size) so
// the kernel has room for its results. `version` goes into the header.
// Validates lengths (names, uuid, target type, text) against the ABI.
absl::Status Encode(const Request& request, const Version& version,
                    size_t buffer_size, Buffer* buffer);

// A validated view of a response buffer: the header plus the data area
// [data_start, data_end), where data_end = min(data_size, buffer size).
// Offsets are relative to the start of the header (as the kernel aligns).
struct Response {
  std::span<const uint8_t> buffer;
  struct dm_ioctl header;
  size_t data_start = 0;
  size_t data_end = 0;

  Version version() const { return {header.version[0], header.version[1], header.version[2]}; }
};
absl::StatusOr<Response> ParseResponse(std::span<const uint8_t> buffer);

// One entry of a LIST_DEVICES result.
struct ListedDevice {
  std::string name;
  DevNum dev;
  std::optional<uint32_t> event_nr;  // interface >= 4.37 only
  std::optional<std::string> uuid;   // when the kernel reports one (>= 4.46)
  bool uuid_known = false;           // false: kernel did not say (old kernel)
};
absl::StatusOr<std::vector<ListedDevice>> DecodeDeviceList(const Response& r);

// TABLE_DEPS result.
absl::StatusOr<std::vector<DevNum>> DecodeDeps(const Response& r);

// LIST_VERSIONS / GET_TARGET_VERSION result.
struct TargetVersion {
  std::string name;
  Version version;
};
absl::StatusOr<std::vector<TargetVersion>> DecodeVersions(const Response& r);

// TABLE_STATUS / DEV_WAIT result: header.target_count specs, each `next`
// relative to the first spec.
struct TargetLine {
  uint64_t start = 0;
  uint64_t length = 0;
  std::string type;
  std::string params;
};
absl::StatusOr<std::vector<TargetLine>> DecodeTargets(const Response& r);

// TARGET_MSG result text (empty unless DM_DATA_OUT_FLAG is set).
absl::StatusOr<std::string> DecodeMessageResult(const Response& r);

// "version 4.47.0 flags 0x... open_count 1 event_nr 3 dev 253:0 name foo":
// the kernel's returned header, for error messages.
std::string DescribeHeader(const struct dm_ioctl& header);

}  // namespace wire
}  // namespace dm
DMTHIN_API_END

#endif  // DMTHIN_LIBDM_WIRE_H_
