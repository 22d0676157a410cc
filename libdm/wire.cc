#include "libdm/wire.h"

#include <sys/ioctl.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "absl/strings/str_format.h"

namespace dm {
namespace {

constexpr uint32_t kAnyDeviceQuery = DM_SECURE_DATA_FLAG;

// One row per command, in command-number order.
constexpr CommandInfo kCommands[kCommandCount] = {
    {Command::kVersion, DM_VERSION, "DM_VERSION", {4, 0, 0}, 0,
     false, false, false, false},
    {Command::kRemoveAll, DM_REMOVE_ALL, "DM_REMOVE_ALL", {4, 0, 0},
     DM_DEFERRED_REMOVE, false, false, false, false},
    {Command::kListDevices, DM_LIST_DEVICES, "DM_LIST_DEVICES", {4, 0, 0},
     0, true, true, false, false},
    {Command::kDevCreate, DM_DEV_CREATE, "DM_DEV_CREATE", {4, 0, 0},
     DM_PERSISTENT_DEV_FLAG, false, false, false, false},
    {Command::kDevRemove, DM_DEV_REMOVE, "DM_DEV_REMOVE", {4, 0, 0},
     DM_DEFERRED_REMOVE, false, false, true, true},
    {Command::kDevRename, DM_DEV_RENAME, "DM_DEV_RENAME", {4, 0, 0},
     DM_UUID_FLAG, false, false, true, true},
    {Command::kDevSuspend, DM_DEV_SUSPEND, "DM_DEV_SUSPEND", {4, 0, 0},
     DM_SUSPEND_FLAG | DM_NOFLUSH_FLAG | DM_SKIP_LOCKFS_FLAG, false, false,
     true, true},
    {Command::kDevStatus, DM_DEV_STATUS, "DM_DEV_STATUS", {4, 0, 0}, 0,
     false, false, false, true},
    {Command::kDevWait, DM_DEV_WAIT, "DM_DEV_WAIT", {4, 0, 0},
     DM_STATUS_TABLE_FLAG | DM_QUERY_INACTIVE_TABLE_FLAG | DM_NOFLUSH_FLAG |
         kAnyDeviceQuery,
     true, true, false, true},
    {Command::kTableLoad, DM_TABLE_LOAD, "DM_TABLE_LOAD", {4, 0, 0},
     DM_READONLY_FLAG | DM_SECURE_DATA_FLAG, false, false, false, true},
    {Command::kTableClear, DM_TABLE_CLEAR, "DM_TABLE_CLEAR", {4, 0, 0}, 0,
     false, false, false, true},
    {Command::kTableDeps, DM_TABLE_DEPS, "DM_TABLE_DEPS", {4, 0, 0},
     DM_QUERY_INACTIVE_TABLE_FLAG, true, true, false, true},
    {Command::kTableStatus, DM_TABLE_STATUS, "DM_TABLE_STATUS", {4, 0, 0},
     DM_STATUS_TABLE_FLAG | DM_QUERY_INACTIVE_TABLE_FLAG | DM_NOFLUSH_FLAG |
         kAnyDeviceQuery | DM_IMA_MEASUREMENT_FLAG,
     true, true, false, true},
    {Command::kListVersions, DM_LIST_VERSIONS, "DM_LIST_VERSIONS", {4, 1, 0},
     0, true, true, false, false},
    {Command::kTargetMsg, DM_TARGET_MSG, "DM_TARGET_MSG", {4, 2, 0},
     DM_SECURE_DATA_FLAG, true, false, false, true},
    {Command::kDevSetGeometry, DM_DEV_SET_GEOMETRY, "DM_DEV_SET_GEOMETRY",
     {4, 6, 0}, 0, false, false, false, true},
    {Command::kDevArmPoll, DM_DEV_ARM_POLL, "DM_DEV_ARM_POLL", {4, 36, 0}, 0,
     false, false, false, false},
    {Command::kGetTargetVersion, DM_GET_TARGET_VERSION,
     "DM_GET_TARGET_VERSION", {4, 41, 0}, 0, true, true, false, false},
};

bool HasNul(absl::string_view s) { return s.find('\0') != absl::string_view::npos; }

// Copies a NUL-terminated string field; `cap` includes the terminator.
absl::Status CheckField(absl::string_view what, absl::string_view s, size_t cap) {
  if (s.size() >= cap)
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", s.size(), " bytes; the limit is ", cap - 1));
  if (HasNul(s)) return absl::InvalidArgumentError(absl::StrCat(what, " contains a NUL byte"));
  return absl::OkStatus();
}

absl::Status Truncated(absl::string_view what, size_t at, size_t end) {
  return absl::DataLossError(
      absl::StrCat("malformed dm ioctl result: ", what, " at offset ", at,
                   " runs past the end of the data (", end, ")"));
}

// Reads a NUL-terminated string starting at `at`, which must end before
// `end`. Returns the string; *after is one past the NUL.
absl::StatusOr<std::string> ReadString(const wire::Response& r, size_t at, size_t end,
                                       absl::string_view what, size_t* after) {
  if (at >= end) return Truncated(what, at, end);
  const char* p = reinterpret_cast<const char*>(r.buffer.data()) + at;
  const void* nul = std::memchr(p, '\0', end - at);
  if (nul == nullptr)
    return absl::DataLossError(absl::StrCat("malformed dm ioctl result: ", what,
                                            " at offset ", at,
                                            " is not NUL-terminated"));
  size_t len = static_cast<const char*>(nul) - p;
  if (after) *after = at + len + 1;
  return std::string(p, len);
}

template <typename T>
T Load(const wire::Response& r, size_t at) {
  T v;
  std::memcpy(&v, r.buffer.data() + at, sizeof(T));
  return v;
}

}  // namespace

const CommandInfo& GetCommandInfo(Command command) {
  return kCommands[static_cast<uint32_t>(command)];
}

Version MinVersionForFlags(uint32_t flags) {
  Version v{4, 0, 0};
  auto need = [&](uint32_t flag, Version min) {
    if ((flags & flag) && v < min) v = min;
  };
  need(DM_NOFLUSH_FLAG, {4, 12, 0});
  need(DM_QUERY_INACTIVE_TABLE_FLAG, {4, 16, 0});
  need(DM_UUID_FLAG, {4, 19, 0});
  need(DM_SECURE_DATA_FLAG, {4, 20, 0});
  need(DM_DEFERRED_REMOVE, {4, 27, 0});
  need(DM_IMA_MEASUREMENT_FLAG, {4, 45, 0});
  return v;
}

namespace wire {

void Buffer::Resize(size_t size) {
  if (size > capacity_) {
    size_t words = (size + 7) / 8;
    storage_.reset(new uint64_t[words]);
    capacity_ = words * 8;
  }
  size_ = size;
}

void Buffer::ShrinkTo(size_t keep) {
  if (capacity_ > keep) {
    storage_.reset();
    capacity_ = size_ = 0;
  }
}

absl::StatusOr<size_t> EncodedSize(const Request& request) {
  size_t size = kHeaderSize;
  switch (request.command) {
    case Command::kTableLoad:
      for (const TargetSpec& t : request.targets)
        size += kTargetSpecSize + Align8(t.params.size() + 1);
      break;
    case Command::kDevRename:
    case Command::kDevSetGeometry:
      size += Align8(request.text.size() + 1);
      break;
    case Command::kTargetMsg:
      size += Align8(sizeof(struct dm_target_msg) + request.text.size() + 1);
      break;
    default:
      break;
  }
  if (size > UINT32_MAX) return absl::InvalidArgumentError("dm ioctl request too large");
  return size;
}

absl::Status Encode(const Request& request, const Version& version,
                    size_t buffer_size, Buffer* buffer) {
  const CommandInfo& info = GetCommandInfo(request.command);
  RETURN_IF_ERROR(CheckField("device name", request.name, DM_NAME_LEN));
  RETURN_IF_ERROR(CheckField("device uuid", request.uuid, DM_UUID_LEN));
  if (request.flags & ~info.accepted_flags)
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s does not accept flags 0x%x", info.name,
        request.flags & ~info.accepted_flags));
  switch (request.command) {
    case Command::kDevRename:
      RETURN_IF_ERROR(CheckField(
          "new name/uuid", request.text,
          (request.flags & DM_UUID_FLAG) ? DM_UUID_LEN : DM_NAME_LEN));
      if (request.text.empty())
        return absl::InvalidArgumentError("DM_DEV_RENAME needs a new name or uuid");
      break;
    case Command::kGetTargetVersion:
      // The kernel reads the target type from the header's name field.
      RETURN_IF_ERROR(CheckField("target type", request.name, DM_MAX_TYPE_NAME));
      if (request.name.empty())
        return absl::InvalidArgumentError("DM_GET_TARGET_VERSION needs a target type");
      break;
    case Command::kDevSetGeometry:
    case Command::kTargetMsg:
      RETURN_IF_ERROR(CheckField("ioctl text", request.text, SIZE_MAX));
      break;
    case Command::kTableLoad:
      for (const TargetSpec& t : request.targets) {
        RETURN_IF_ERROR(CheckField("target type", t.type, DM_MAX_TYPE_NAME));
        if (t.type.empty()) return absl::InvalidArgumentError("empty target type");
        RETURN_IF_ERROR(CheckField("target params", t.params, SIZE_MAX));
      }
      if (request.targets.size() > UINT32_MAX)
        return absl::InvalidArgumentError("too many targets");
      break;
    default:
      break;
  }
  ASSIGN_OR_RETURN(size_t needed, EncodedSize(request));
  size_t size = std::max(needed, Align8(buffer_size));
  if (size > UINT32_MAX) return absl::InvalidArgumentError("dm ioctl buffer too large");
  buffer->Resize(size);
  // Zero what we send; the result area beyond it is the kernel's to fill.
  std::memset(buffer->data(), 0, needed);

  struct dm_ioctl* h = buffer->header();
  h->version[0] = version.major;
  h->version[1] = version.minor;
  h->version[2] = version.patch;
  h->data_size = static_cast<uint32_t>(size);
  h->data_start = static_cast<uint32_t>(kHeaderSize);
  h->flags = request.flags;
  h->event_nr = request.event_nr;
  h->dev = request.dev;
  std::memcpy(h->name, request.name.data(), request.name.size());
  std::memcpy(h->uuid, request.uuid.data(), request.uuid.size());

  uint8_t* out = buffer->data() + kHeaderSize;
  switch (request.command) {
    case Command::kTableLoad: {
      h->target_count = static_cast<uint32_t>(request.targets.size());
      for (const TargetSpec& t : request.targets) {
        struct dm_target_spec spec;
        std::memset(&spec, 0, sizeof spec);
        spec.sector_start = t.start;
        spec.length = t.length;
        std::memcpy(spec.target_type, t.type.data(), t.type.size());
        // LOAD: next is relative to this spec; params padded to 8 bytes.
        size_t span = kTargetSpecSize + Align8(t.params.size() + 1);
        spec.next = static_cast<uint32_t>(span);
        std::memcpy(out, &spec, sizeof spec);
        std::memcpy(out + kTargetSpecSize, t.params.data(), t.params.size());
        out += span;
      }
      break;
    }
    case Command::kDevRename:
    case Command::kDevSetGeometry:
      std::memcpy(out, request.text.data(), request.text.size());
      break;
    case Command::kTargetMsg: {
      uint64_t sector = request.message_sector;
      std::memcpy(out + offsetof(struct dm_target_msg, sector), &sector, sizeof sector);
      std::memcpy(out + offsetof(struct dm_target_msg, message), request.text.data(),
                  request.text.size());
      break;
    }
    default:
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<Response> ParseResponse(std::span<const uint8_t> buffer) {
  if (buffer.size() < kHeaderSize)
    return absl::DataLossError(absl::StrCat("dm ioctl result of ", buffer.size(),
                                            " bytes is shorter than its header (",
                                            kHeaderSize, ")"));
  Response r;
  r.buffer = buffer;
  std::memcpy(&r.header, buffer.data(), kHeaderSize);
  r.data_start = r.header.data_start;
  if (r.data_start < kHeaderSize || r.data_start > buffer.size())
    return absl::DataLossError(absl::StrCat(
        "malformed dm ioctl result: data_start ", r.header.data_start,
        " outside [", kHeaderSize, ", ", buffer.size(), "]"));
  // Header-only replies carry data_size = offsetof(struct dm_ioctl, data)
  // (305), less than data_start: no data at all.
  r.data_end = std::max(r.data_start, std::min<size_t>(r.header.data_size, buffer.size()));
  return r;
}

absl::StatusOr<std::vector<ListedDevice>> DecodeDeviceList(const Response& r) {
  std::vector<ListedDevice> out;
  constexpr size_t kFixed = offsetof(struct dm_name_list, name);  // 12
  const bool has_extras = r.version() >= Version{4, 37, 0};
  size_t at = r.data_start;
  // An empty list is one record whose dev is 0.
  if (at + kFixed > r.data_end) {
    if (at == r.data_end) return out;  // nothing at all: no devices
    return Truncated("device list record", at, r.data_end);
  }
  if (Load<uint64_t>(r, at + offsetof(struct dm_name_list, dev)) == 0) return out;
  for (;;) {
    if (at % 8 != 0)
      return absl::DataLossError(absl::StrCat(
          "malformed dm ioctl result: device list record at unaligned offset ", at));
    if (at + kFixed > r.data_end) return Truncated("device list record", at, r.data_end);
    uint64_t dev = Load<uint64_t>(r, at + offsetof(struct dm_name_list, dev));
    uint32_t next = Load<uint32_t>(r, at + offsetof(struct dm_name_list, next));
    size_t end = r.data_end;
    if (next != 0) {
      if (next < kFixed + 1 || next > r.data_end - at)
        return absl::DataLossError(absl::StrCat(
            "malformed dm ioctl result: device list record at ", at,
            " has next ", next, " outside the data"));
      end = at + next;
    }
    ListedDevice d;
    d.dev = DevNum::FromKernel(dev);
    size_t after = 0;
    ASSIGN_OR_RETURN(d.name, ReadString(r, at + kFixed, end, "device name", &after));
    size_t extra = Align8(after);
    if (has_extras && extra + 8 <= end) {
      d.event_nr = Load<uint32_t>(r, extra);
      uint32_t flags = Load<uint32_t>(r, extra + 4);
      if (flags & DM_NAME_LIST_FLAG_HAS_UUID) {
        d.uuid_known = true;
        ASSIGN_OR_RETURN(std::string uuid,
                         ReadString(r, extra + 8, end, "device uuid", nullptr));
        d.uuid = std::move(uuid);
      } else if (flags & DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID) {
        d.uuid_known = true;
      }
    }
    out.push_back(std::move(d));
    if (next == 0) break;
    at += next;
  }
  return out;
}

absl::StatusOr<std::vector<DevNum>> DecodeDeps(const Response& r) {
  constexpr size_t kFixed = offsetof(struct dm_target_deps, dev);  // 8
  size_t at = r.data_start;
  if (at + kFixed > r.data_end) return Truncated("dependency list", at, r.data_end);
  uint32_t count = Load<uint32_t>(r, at);
  size_t avail = (r.data_end - at - kFixed) / sizeof(uint64_t);
  if (count > avail)
    return absl::DataLossError(absl::StrCat(
        "malformed dm ioctl result: dependency list claims ", count,
        " devices but the data holds ", avail));
  std::vector<DevNum> out;
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i)
    out.push_back(DevNum::FromKernel(Load<uint64_t>(r, at + kFixed + 8 * i)));
  return out;
}

absl::StatusOr<std::vector<TargetVersion>> DecodeVersions(const Response& r) {
  constexpr size_t kFixed = offsetof(struct dm_target_versions, name);  // 16
  std::vector<TargetVersion> out;
  size_t at = r.data_start;
  if (at == r.data_end) return out;
  for (;;) {
    if (at % 8 != 0)
      return absl::DataLossError(absl::StrCat(
          "malformed dm ioctl result: target version record at unaligned offset ", at));
    if (at + kFixed > r.data_end) return Truncated("target version record", at, r.data_end);
    uint32_t next = Load<uint32_t>(r, at);
    size_t end = r.data_end;
    if (next != 0) {
      if (next < kFixed + 1 || next > r.data_end - at)
        return absl::DataLossError(absl::StrCat(
            "malformed dm ioctl result: target version record at ", at,
            " has next ", next, " outside the data"));
      end = at + next;
    }
    TargetVersion v;
    v.version.major = Load<uint32_t>(r, at + 4);
    v.version.minor = Load<uint32_t>(r, at + 8);
    v.version.patch = Load<uint32_t>(r, at + 12);
    ASSIGN_OR_RETURN(v.name, ReadString(r, at + kFixed, end, "target name", nullptr));
    out.push_back(std::move(v));
    if (next == 0) break;
    at += next;
  }
  return out;
}

absl::StatusOr<std::vector<TargetLine>> DecodeTargets(const Response& r) {
  std::vector<TargetLine> out;
  const size_t first = r.data_start;
  size_t at = first;
  uint32_t count = r.header.target_count;
  // Each spec takes at least 41 bytes, which bounds a bogus count.
  if (size_t{count} * (kTargetSpecSize + 1) > r.data_end - first)
    return absl::DataLossError(absl::StrCat(
        "malformed dm ioctl result: ", count, " targets cannot fit in ",
        r.data_end - first, " bytes"));
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (at % 8 != 0)
      return absl::DataLossError(absl::StrCat(
          "malformed dm ioctl result: target spec ", i, " at unaligned offset ", at));
    if (at + kTargetSpecSize > r.data_end) return Truncated("target spec", at, r.data_end);
    struct dm_target_spec spec;
    std::memcpy(&spec, r.buffer.data() + at, sizeof spec);
    TargetLine t;
    t.start = spec.sector_start;
    t.length = spec.length;
    const char* type = spec.target_type;
    t.type.assign(type, strnlen(type, sizeof spec.target_type));
    ASSIGN_OR_RETURN(t.params, ReadString(r, at + kTargetSpecSize, r.data_end,
                                          "target params", nullptr));
    out.push_back(std::move(t));
    if (i + 1 < count) {
      // STATUS results: next is relative to the FIRST spec, and must move on.
      size_t next = first + spec.next;
      if (spec.next == 0 || next <= at || next > r.data_end)
        return absl::DataLossError(absl::StrCat(
            "malformed dm ioctl result: target spec ", i, " has next ", spec.next,
            " (relative to the first spec at ", first, "), outside the data"));
      at = next;
    }
  }
  return out;
}

absl::StatusOr<std::string> DecodeMessageResult(const Response& r) {
  if (!(r.header.flags & DM_DATA_OUT_FLAG)) return std::string();
  if (r.data_start == r.data_end) return std::string();
  return ReadString(r, r.data_start, r.data_end, "message result", nullptr);
}

std::string DescribeHeader(const struct dm_ioctl& h) {
  DevNum dev = DevNum::FromKernel(h.dev);
  return absl::StrFormat(
      "version %u.%u.%u flags 0x%x open_count %d event_nr %u target_count %u dev %s name '%s' uuid '%s'",
      h.version[0], h.version[1], h.version[2], h.flags, h.open_count, h.event_nr,
      h.target_count, dev.ToString(),
      std::string(h.name, strnlen(h.name, sizeof h.name)),
      std::string(h.uuid, strnlen(h.uuid, sizeof h.uuid)));
}

}  // namespace wire
}  // namespace dm
