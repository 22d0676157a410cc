#include "libdm/control.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status.h"
#include "nodes.h"

namespace dm {
namespace {

constexpr absl::string_view kHeaderPayload = "dmthin.dm_header";
constexpr absl::string_view kCommandPayload = "dmthin.dm_command";
constexpr uint32_t kMiscMajor = 10;
constexpr uint32_t kMapperControlMinor = 236;  // MAPPER_CTRL_MINOR
constexpr size_t kKeepBufferBytes = 1024 * 1024;

std::string HeaderString(const char* field, size_t cap) {
  return std::string(field, strnlen(field, cap));
}

// The control node's number from sysfs, else /proc/misc; nullopt if the
// kernel lists no device-mapper (module not loaded, or not built).
std::optional<DevNum> ControlDevNum() {
  std::ifstream sys("/sys/class/misc/device-mapper/dev");
  std::string line;
  if (std::getline(sys, line)) {
    auto d = DevNum::Parse(absl::StripAsciiWhitespace(line));
    if (d.ok()) return *d;
  }
  std::ifstream misc("/proc/misc");
  while (std::getline(misc, line)) {
    std::vector<absl::string_view> w =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint32_t minor;
    if (w.size() == 2 && w[1] == "device-mapper" && absl::SimpleAtoi(w[0], &minor))
      return DevNum{kMiscMajor, minor};
  }
  return std::nullopt;
}

bool IsCharNode(const std::string& path, DevNum dev) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == dev.ToDevT();
}

// Creates (or replaces a wrong) control node atomically.
absl::Status MakeControlNode(const std::string& path, DevNum dev) {
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
      return base::ErrnoError(errno, absl::StrCat("mkdir ", dir));
  }
  std::string tmp = absl::StrCat(path, ".dmthin-", ::getpid());
  mode_t old = ::umask(0);
  int r = ::mknod(tmp.c_str(), S_IFCHR | 0600, dev.ToDevT());
  int err = errno;
  ::umask(old);
  if (r != 0) return base::ErrnoError(err, absl::StrCat("mknod ", tmp, " c ", dev.ToString()));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return base::ErrnoError(err, absl::StrCat("rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

absl::Status IoctlError(int err, const CommandInfo& info, const DeviceLabel& label,
                        const struct dm_ioctl& header) {
  std::string device = label.ToString();
  absl::Status s = base::ErrnoError(
      err, device.empty() ? absl::string_view(info.name)
                          : absl::StrCat(info.name, " ", device));
  s.SetPayload(kHeaderPayload, absl::Cord(wire::DescribeHeader(header)));
  s.SetPayload(kCommandPayload, absl::Cord(info.name));
  return s;
}

absl::Status WithContext(absl::Status s, const CommandInfo& info, const DeviceLabel& label) {
  if (s.ok()) return s;
  std::string device = label.ToString();
  absl::Status out = base::Annotate(
      s, device.empty() ? absl::string_view(info.name) : absl::StrCat(info.name, " ", device));
  out.SetPayload(kCommandPayload, absl::Cord(info.name));
  return out;
}

// A thread-local buffer, or a private one when a reply callback re-enters.
struct BufferLease {
  BufferLease() {
    if (!in_use) {
      in_use = true;
      owned = false;
      buf = &cached;
    } else {
      owned = true;
      buf = new wire::Buffer();
    }
  }
  ~BufferLease() {
    if (owned) {
      delete buf;
    } else {
      if (buf->capacity() > kKeepBufferBytes) buf->ShrinkTo(0);
      in_use = false;
    }
  }
  wire::Buffer* buf;
  bool owned;
  static thread_local wire::Buffer cached;
  static thread_local bool in_use;
};
thread_local wire::Buffer BufferLease::cached;
thread_local bool BufferLease::in_use = false;

// Runs `request` and returns its reply as `decode` (one of wire::Decode*)
// reads it.
template <typename T>
absl::StatusOr<T> RunDecoded(const Control& control, const wire::Request& request,
                             absl::StatusOr<T> (*decode)(const wire::Response&),
                             const DeviceLabel& device = {}) {
  T out;
  RETURN_IF_ERROR(control.Run(
      request,
      [&](const wire::Response& r) -> absl::Status {
        ASSIGN_OR_RETURN(out, decode(r));
        return absl::OkStatus();
      },
      device));
  return out;
}

}  // namespace

DeviceInfo DeviceInfo::FromHeader(const struct dm_ioctl& h) {
  DeviceInfo d;
  d.name = HeaderString(h.name, sizeof h.name);
  d.uuid = HeaderString(h.uuid, sizeof h.uuid);
  d.dev = DevNum::FromKernel(h.dev);
  d.open_count = h.open_count;
  d.event_nr = h.event_nr;
  d.target_count = h.target_count;
  d.flags = h.flags;
  return d;
}

std::optional<std::string> GetReturnedHeader(const absl::Status& status) {
  auto p = status.GetPayload(kHeaderPayload);
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

std::optional<std::string> GetCommand(const absl::Status& status) {
  auto p = status.GetPayload(kCommandPayload);
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

absl::StatusOr<std::unique_ptr<Control>> Control::Open(ControlOptions options) {
  std::unique_ptr<Control> c(new Control(std::move(options)));
  const std::string& path = c->options_.control_path;
  std::optional<DevNum> want = ControlDevNum();
  struct stat st;
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (want.has_value()) {
    if (!IsCharNode(path, *want)) RETURN_IF_ERROR(MakeControlNode(path, *want));
  } else if (!exists) {
    // No dm in /proc/misc: the module may be loadable on first open of the
    // well-known number (char-major-10-236 alias).
    RETURN_IF_ERROR(MakeControlNode(path, DevNum{kMiscMajor, kMapperControlMinor}));
  }
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (!want.has_value())
      return base::ErrnoError(
          err, absl::StrCat("open ", path,
                            " (the kernel lists no device-mapper in /proc/misc: "
                            "dm_mod is not loaded or not built)"));
    return base::ErrnoError(err, absl::StrCat("open ", path));
  }
  c->fd_.reset(fd);
  // The first DM_VERSION goes out before we know the kernel's version.
  ASSIGN_OR_RETURN(c->version_, c->QueryVersion());
  if (c->version_.major != DM_VERSION_MAJOR)
    return absl::FailedPreconditionError(absl::StrCat(
        "kernel dm interface ", c->version_.ToString(), " is not version ",
        DM_VERSION_MAJOR, ".x"));
  switch (c->options_.node_mode) {
    case NodeMode::kAuto:
      c->node_mode_ = internal::UdevRunning() ? NodeMode::kUdev : NodeMode::kManual;
      break;
    default:
      c->node_mode_ = c->options_.node_mode;
  }
  return c;
}

std::string DeviceLabel::ToString() const {
  if (id_ == nullptr) return std::string(text_);
  if (message_.empty()) return id_->ToString();
  return absl::StrCat(id_->ToString(), " message '", message_, "'");
}

absl::Status Control::Run(const wire::Request& request,
                          absl::FunctionRef<absl::Status(const wire::Response&)> on_reply,
                          const DeviceLabel& device) const {
  return RunOn(fd_.get(), request, on_reply, device);
}

absl::Status Control::RunOn(int fd, const wire::Request& request,
                            absl::FunctionRef<absl::Status(const wire::Response&)> on_reply,
                            const DeviceLabel& device) const {
  const CommandInfo& info = GetCommandInfo(request.command);
  Version need = std::max(info.min_version, MinVersionForFlags(request.flags));
  if (version_.major != 0 && version_ < need)
    return absl::FailedPreconditionError(absl::StrCat(
        info.name, " with flags 0x", absl::Hex(request.flags), " needs dm interface ",
        need.ToString(), "; the kernel has ", version_.ToString()));
  BufferLease lease;
  wire::Buffer& buf = *lease.buf;
  size_t size = info.returns_data ? wire::kInitialBufferSize : 0;
  for (;;) {
    RETURN_IF_ERROR(WithContext(wire::Encode(request, need, size, &buf), info, device));
    int r;
    // EINTR is retried, except for DEV_WAIT: a signal is how a caller
    // interrupts a wait.
    do {
      r = ::ioctl(fd, info.request, buf.data());
    } while (r < 0 && errno == EINTR && request.command != Command::kDevWait);
    if (r < 0) return IoctlError(errno, info, device, *buf.header());
    if (buf.header()->flags & DM_BUFFER_FULL_FLAG) {
      size_t next = std::max(buf.size(), wire::kInitialBufferSize) * 2;
      if (info.retry_when_full && next <= options_.max_buffer_size) {
        size = next;
        continue;
      }
      absl::Status s = absl::ResourceExhaustedError(absl::StrCat(
          "result does not fit in ", buf.size(), " bytes",
          info.retry_when_full ? " (the buffer cap)"
                               : " (the command ran; its answer was cut short)"));
      s.SetPayload(kHeaderPayload, absl::Cord(wire::DescribeHeader(*buf.header())));
      return WithContext(s, info, device);
    }
    absl::StatusOr<wire::Response> response = wire::ParseResponse(buf.bytes());
    if (!response.ok()) return WithContext(response.status(), info, device);
    return WithContext(on_reply(*response), info, device);
  }
}

absl::StatusOr<struct dm_ioctl> Control::RunHeader(const wire::Request& request,
                                                   const DeviceLabel& device) const {
  struct dm_ioctl header;
  RETURN_IF_ERROR(Run(
      request,
      [&](const wire::Response& r) {
        header = r.header;
        return absl::OkStatus();
      },
      device));
  return header;
}

absl::Status Control::FillDevice(const DevId& id, wire::Request* request) const {
  if (const Name* n = id.name()) request->name = n->str();
  else if (const Uuid* u = id.uuid()) request->uuid = u->str();
  else request->dev = id.dev()->ToKernel();
  return absl::OkStatus();
}

uint32_t Control::Cookie() const {
  uint16_t flags = udev::kPrimarySource | options_.udev_flags;
  if (node_mode_ == NodeMode::kUdev) flags |= udev::kDisableLibraryFallback;
  return udev::Cookie(flags);
}

std::string Control::NodePath(const std::string& name) const {
  return absl::StrCat(options_.dev_dir, "/mapper/", name);
}

absl::StatusOr<Version> Control::QueryVersion() const {
  wire::Request req;
  req.command = Command::kVersion;
  ASSIGN_OR_RETURN(struct dm_ioctl h, RunHeader(req));
  return Version{h.version[0], h.version[1], h.version[2]};
}

absl::StatusOr<std::vector<wire::ListedDevice>> Control::List() const {
  wire::Request req;
  req.command = Command::kListDevices;
  return RunDecoded(*this, req, wire::DecodeDeviceList);
}

absl::StatusOr<DeviceInfo> Control::Create(const Name& name, const CreateOptions& options) const {
  wire::Request req;
  req.command = Command::kDevCreate;
  req.name = name.str();
  if (options.uuid) req.uuid = options.uuid->str();
  if (options.dev) {
    req.flags |= DM_PERSISTENT_DEV_FLAG;
    req.dev = options.dev->ToKernel();
  }
  const DevId id(name);
  ASSIGN_OR_RETURN(struct dm_ioctl h, RunHeader(req, id));
  return DeviceInfo::FromHeader(h);
}

absl::Status Control::Load(const DevId& id, const Table& table, bool read_only) const {
  RETURN_IF_ERROR(base::Annotate(table.Validate(), absl::StrCat("DM_TABLE_LOAD ", id.ToString())));
  wire::Request req;
  req.command = Command::kTableLoad;
  RETURN_IF_ERROR(FillDevice(id, &req));
  if (read_only) req.flags |= DM_READONLY_FLAG;
  req.targets.reserve(table.targets().size());
  for (const Target& t : table.targets())
    req.targets.push_back(
        wire::TargetSpec{t.start.value(), t.length.value(), t.type(), t.FormatParams()});
  return RunHeader(req, id).status();
}

absl::Status Control::ClearInactive(const DevId& id) const {
  wire::Request req;
  req.command = Command::kTableClear;
  RETURN_IF_ERROR(FillDevice(id, &req));
  return RunHeader(req, id).status();
}

absl::StatusOr<DeviceInfo> Control::Suspend(const DevId& id, const SuspendOptions& options) const {
  wire::Request req;
  req.command = Command::kDevSuspend;
  RETURN_IF_ERROR(FillDevice(id, &req));
  req.flags = DM_SUSPEND_FLAG;
  if (options.noflush) req.flags |= DM_NOFLUSH_FLAG;
  if (options.skip_lockfs) req.flags |= DM_SKIP_LOCKFS_FLAG;
  ASSIGN_OR_RETURN(struct dm_ioctl h, RunHeader(req, id));
  return DeviceInfo::FromHeader(h);
}

absl::StatusOr<DeviceInfo> Control::Resume(const DevId& id) const {
  wire::Request req;
  req.command = Command::kDevSuspend;
  RETURN_IF_ERROR(FillDevice(id, &req));
  req.event_nr = Cookie();
  std::unique_ptr<internal::UdevWaiter> waiter;
  if (node_mode_ == NodeMode::kUdev) {
    auto w = internal::UdevWaiter::Start();
    if (w.ok()) waiter = *std::move(w);
  }
  ASSIGN_OR_RETURN(struct dm_ioctl h, RunHeader(req, id));
  DeviceInfo info = DeviceInfo::FromHeader(h);
  if (node_mode_ == NodeMode::kNone || !info.live_table()) return info;
  std::string path = NodePath(info.name);
  if (waiter && (h.flags & DM_UEVENT_GENERATED_FLAG) &&
      !(options_.udev_flags & udev::kDisableDmRules)) {
    auto done = waiter->Wait([&] { return internal::NodeIs(path, info.dev); },
                             options_.udev_timeout);
    if (done.ok() && *done) return info;
  }
  // Manual mode, or udev did not make it: make it ourselves (lvm2's fallback).
  absl::Status s = internal::MakeNode(path, info.dev);
  if (!s.ok())
    return base::Annotate(s, absl::StrCat("device ", info.name, " resumed, but its node"));
  return info;
}

absl::StatusOr<Removal> Control::Remove(const DevId& id, const RemoveOptions& options) const {
  wire::Request req;
  req.command = Command::kDevRemove;
  RETURN_IF_ERROR(FillDevice(id, &req));
  if (options.deferred) req.flags |= DM_DEFERRED_REMOVE;
  req.event_nr = Cookie();
  absl::Duration backoff = options.backoff;
  struct dm_ioctl h;
  std::unique_ptr<internal::UdevWaiter> waiter;
  for (int attempt = 0;; ++attempt) {
    if (node_mode_ == NodeMode::kUdev && !waiter) {
      auto w = internal::UdevWaiter::Start();
      if (w.ok()) waiter = *std::move(w);
    }
    absl::StatusOr<struct dm_ioctl> r = RunHeader(req, id);
    if (r.ok()) {
      h = *r;
      break;
    }
    if (!base::HasErrno(r.status(), EBUSY) || attempt >= options.retries)
      return attempt == 0 ? r.status()
                          : base::Annotate(r.status(), absl::StrCat("after ", attempt, " retries"));
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
  }
  const Removal removal = (h.flags & DM_DEFERRED_REMOVE) ? Removal::kDeferred : Removal::kRemoved;
  if (node_mode_ == NodeMode::kNone) return removal;
  // Under udev, the link goes with the kernel's remove event, whenever the
  // (deferred) removal happens.
  if (removal == Removal::kDeferred && node_mode_ == NodeMode::kUdev) return removal;
  std::string name = HeaderString(h.name, sizeof h.name);
  if (name.empty()) return removal;
  std::string path = NodePath(name);
  // A deferred removal takes the node away now: current holders keep their
  // fds, no new opener finds a device that is going, and nothing stale is
  // left when the last holder closes. CancelDeferredRemove puts it back.
  if (removal == Removal::kRemoved && waiter && (h.flags & DM_UEVENT_GENERATED_FLAG)) {
    auto done = waiter->Wait([&] { return !internal::PathExists(path); }, options_.udev_timeout);
    if (done.ok() && *done) return removal;
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return removal;
  if (!S_ISLNK(st.st_mode) && !S_ISBLK(st.st_mode)) return removal;  // not ours to touch
  if (S_ISBLK(st.st_mode) && removal == Removal::kRemoved) {
    // Keep it only if it names a live device of this very name (recreated
    // meanwhile by someone else).
    absl::StatusOr<std::optional<DeviceInfo>> now = Find(DevNum::FromDevT(st.st_rdev));
    if (now.ok() && now->has_value() && (*now)->name == name) return removal;
  }
  absl::Status rs = internal::RemoveNode(path);
  if (!rs.ok())
    return base::Annotate(rs, absl::StrCat("device ", name, " removed, but its node"));
  return removal;
}

absl::Status Control::CancelDeferredRemove(const DevId& id) const {
  RETURN_IF_ERROR(Message(id, Sectors(0), "@cancel_deferred_remove").status());
  if (node_mode_ != NodeMode::kManual) return absl::OkStatus();
  ASSIGN_OR_RETURN(DeviceInfo info, Info(id));
  if (!info.live_table()) return absl::OkStatus();
  return internal::MakeNode(NodePath(info.name), info.dev);
}

absl::Status Control::RemoveAll(bool deferred) const {
  wire::Request req;
  req.command = Command::kRemoveAll;
  if (deferred) req.flags |= DM_DEFERRED_REMOVE;
  RETURN_IF_ERROR(RunHeader(req).status());
  return SyncNodes();
}

absl::StatusOr<DeviceInfo> Control::Info(const DevId& id) const {
  wire::Request req;
  req.command = Command::kDevStatus;
  RETURN_IF_ERROR(FillDevice(id, &req));
  ASSIGN_OR_RETURN(struct dm_ioctl h, RunHeader(req, id));
  return DeviceInfo::FromHeader(h);
}

absl::StatusOr<std::optional<DeviceInfo>> Control::Find(const DevId& id) const {
  absl::StatusOr<DeviceInfo> info = Info(id);
  if (info.ok()) return std::optional<DeviceInfo>(*std::move(info));
  if (base::HasErrno(info.status(), ENXIO)) return std::optional<DeviceInfo>();
  return info.status();
}

absl::StatusOr<std::string> Control::NameOf(const DevId& id) const {
  if (const Name* n = id.name()) return n->str();
  ASSIGN_OR_RETURN(DeviceInfo info, Info(id));
  return info.name;
}

absl::Status Control::Rename(const DevId& id, const Name& new_name) const {
  // The kernel finds the device to rename by name only.
  ASSIGN_OR_RETURN(std::string old_name, NameOf(id));
  wire::Request req;
  req.command = Command::kDevRename;
  req.name = old_name;
  req.text = new_name.str();
  req.event_nr = Cookie();
  std::unique_ptr<internal::UdevWaiter> waiter;
  if (node_mode_ == NodeMode::kUdev) {
    auto w = internal::UdevWaiter::Start();
    if (w.ok()) waiter = *std::move(w);
  }
  ASSIGN_OR_RETURN(struct dm_ioctl h, RunHeader(req, absl::StrCat("name=", old_name)));
  if (node_mode_ == NodeMode::kNone) return absl::OkStatus();
  std::string old_path = NodePath(old_name), new_path = NodePath(new_name.str());
  if (waiter && (h.flags & DM_UEVENT_GENERATED_FLAG)) {
    auto done = waiter->Wait(
        [&] { return internal::PathExists(new_path) && !internal::PathExists(old_path); },
        options_.udev_timeout);
    if (done.ok() && *done) return absl::OkStatus();
  }
  struct stat st;
  if (::lstat(old_path.c_str(), &st) != 0 || !(S_ISLNK(st.st_mode) || S_ISBLK(st.st_mode)))
    return absl::OkStatus();  // no node to move (device without a table)
  ASSIGN_OR_RETURN(DeviceInfo info, Info(new_name));
  RETURN_IF_ERROR(internal::MakeNode(new_path, info.dev));
  return internal::RemoveNode(old_path);
}

absl::Status Control::SetUuid(const DevId& id, const Uuid& uuid) const {
  ASSIGN_OR_RETURN(std::string name, NameOf(id));
  wire::Request req;
  req.command = Command::kDevRename;
  req.name = name;
  req.flags = DM_UUID_FLAG;
  req.text = uuid.str();
  req.event_nr = Cookie();
  return RunHeader(req, absl::StrCat("name=", name)).status();
}

absl::StatusOr<std::vector<wire::TargetLine>> Control::Status(const DevId& id,
                                                              const StatusOptions& options) const {
  wire::Request req;
  req.command = Command::kTableStatus;
  RETURN_IF_ERROR(FillDevice(id, &req));
  if (options.inactive) req.flags |= DM_QUERY_INACTIVE_TABLE_FLAG;
  if (options.noflush) req.flags |= DM_NOFLUSH_FLAG;
  return RunDecoded(*this, req, wire::DecodeTargets, id);
}

absl::StatusOr<std::vector<wire::TargetLine>> Control::TableLines(const DevId& id,
                                                                  bool inactive) const {
  wire::Request req;
  req.command = Command::kTableStatus;
  RETURN_IF_ERROR(FillDevice(id, &req));
  req.flags = DM_STATUS_TABLE_FLAG;
  if (inactive) req.flags |= DM_QUERY_INACTIVE_TABLE_FLAG;
  return RunDecoded(*this, req, wire::DecodeTargets, id);
}

absl::StatusOr<Table> Control::GetTable(const DevId& id, bool inactive) const {
  ASSIGN_OR_RETURN(std::vector<wire::TargetLine> lines, TableLines(id, inactive));
  Table table;
  for (const wire::TargetLine& l : lines) {
    ASSIGN_OR_RETURN(Target t, Target::Parse(Sectors(l.start), Sectors(l.length), l.type, l.params));
    table.targets().push_back(std::move(t));
  }
  return table;
}

absl::StatusOr<std::vector<DevNum>> Control::Deps(const DevId& id, bool inactive) const {
  wire::Request req;
  req.command = Command::kTableDeps;
  RETURN_IF_ERROR(FillDevice(id, &req));
  if (inactive) req.flags |= DM_QUERY_INACTIVE_TABLE_FLAG;
  return RunDecoded(*this, req, wire::DecodeDeps, id);
}

absl::StatusOr<std::string> Control::Message(const DevId& id, Sectors sector,
                                             absl::string_view message) const {
  if (message.empty()) return absl::InvalidArgumentError("empty target message");
  wire::Request req;
  req.command = Command::kTargetMsg;
  RETURN_IF_ERROR(FillDevice(id, &req));
  req.message_sector = sector.value();
  req.text = std::string(message);
  return RunDecoded(*this, req, wire::DecodeMessageResult, DeviceLabel(id, message));
}

absl::StatusOr<WaitResult> Control::WaitEvent(const DevId& id, uint32_t event_nr) const {
  wire::Request req;
  req.command = Command::kDevWait;
  RETURN_IF_ERROR(FillDevice(id, &req));
  req.event_nr = event_nr;
  WaitResult out;
  RETURN_IF_ERROR(Run(
      req,
      [&](const wire::Response& r) -> absl::Status {
        out.info = DeviceInfo::FromHeader(r.header);
        ASSIGN_OR_RETURN(out.status, wire::DecodeTargets(r));
        return absl::OkStatus();
      },
      id));
  return out;
}

absl::Status Control::SetGeometry(const DevId& id, const Geometry& g) const {
  if (g.cylinders > 65535 || g.heads > 255 || g.sectors > 255)
    return absl::InvalidArgumentError(absl::StrCat(
        "geometry ", g.cylinders, "/", g.heads, "/", g.sectors,
        ": cylinders <= 65535, heads and sectors <= 255"));
  wire::Request req;
  req.command = Command::kDevSetGeometry;
  RETURN_IF_ERROR(FillDevice(id, &req));
  req.text = absl::StrCat(g.cylinders, " ", g.heads, " ", g.sectors, " ", g.start);
  return RunHeader(req, id).status();
}

absl::StatusOr<std::vector<wire::TargetVersion>> Control::ListVersions() const {
  wire::Request req;
  req.command = Command::kListVersions;
  return RunDecoded(*this, req, wire::DecodeVersions);
}

absl::StatusOr<Version> Control::TargetVersion(const std::string& type) const {
  {
    absl::MutexLock lock(&target_mu_);
    auto it = target_versions_.find(type);
    if (it != target_versions_.end()) return it->second;
  }
  std::optional<Version> found;
  if (version_ >= GetCommandInfo(Command::kGetTargetVersion).min_version) {
    wire::Request req;
    req.command = Command::kGetTargetVersion;
    req.name = type;
    RETURN_IF_ERROR(Run(
        req,
        [&](const wire::Response& r) -> absl::Status {
          ASSIGN_OR_RETURN(std::vector<wire::TargetVersion> v, wire::DecodeVersions(r));
          if (v.size() == 1 && v[0].name == type) found = v[0].version;
          return absl::OkStatus();
        },
        absl::StrCat("target ", type)));
  } else {
    ASSIGN_OR_RETURN(std::vector<wire::TargetVersion> all, ListVersions());
    for (const wire::TargetVersion& v : all)
      if (v.name == type) found = v.version;
  }
  if (!found)
    return absl::NotFoundError(absl::StrCat("device-mapper target '", type, "' is not available"));
  absl::MutexLock lock(&target_mu_);
  target_versions_[type] = *found;
  return *found;
}

absl::Status Control::RequireTarget(const std::string& type, const Version& min) const {
  ASSIGN_OR_RETURN(Version v, TargetVersion(type));
  if (v < min)
    return absl::FailedPreconditionError(absl::StrCat(
        "device-mapper target '", type, "' is version ", v.ToString(), "; need ",
        min.ToString(), " or later"));
  return absl::OkStatus();
}

absl::StatusOr<DeviceInfo> Control::CreateDevice(const Name& name, const Table& table,
                                                 const CreateOptions& options,
                                                 bool read_only) const {
  RETURN_IF_ERROR(table.Validate());
  ASSIGN_OR_RETURN(DeviceInfo created, Create(name, options));
  absl::Status s = Load(name, table, read_only);
  absl::StatusOr<DeviceInfo> info = s.ok() ? Resume(name) : absl::StatusOr<DeviceInfo>(s);
  if (!info.ok()) {
    RemoveOptions ro;
    ro.retries = 2;
    (void)Remove(name, ro);
    return info.status();
  }
  return info;
}

absl::StatusOr<DeviceInfo> Control::Reload(const DevId& id, const Table& table) const {
  RETURN_IF_ERROR(Load(id, table));
  return Resume(id);
}

absl::StatusOr<ThinPoolStatus> Control::GetThinPoolStatus(const DevId& id, bool noflush) const {
  StatusOptions o;
  o.noflush = noflush;
  ASSIGN_OR_RETURN(std::vector<wire::TargetLine> lines, Status(id, o));
  if (lines.size() != 1 || lines[0].type != "thin-pool")
    return absl::FailedPreconditionError(
        absl::StrCat(id.ToString(), " is not a single thin-pool target"));
  return ParseThinPoolStatus(lines[0].params);
}

absl::StatusOr<ThinStatus> Control::GetThinStatus(const DevId& id) const {
  ASSIGN_OR_RETURN(std::vector<wire::TargetLine> lines, Status(id));
  if (lines.size() != 1 || lines[0].type != "thin")
    return absl::FailedPreconditionError(
        absl::StrCat(id.ToString(), " is not a single thin target"));
  return ParseThinStatus(lines[0].params);
}

absl::Status Control::SendThinPoolMessage(const DevId& pool, const ThinPoolMessage& message) const {
  ASSIGN_OR_RETURN(std::string text, FormatThinPoolMessage(message));
  return Message(pool, Sectors(0), text).status();
}

absl::Status Control::SyncNodes() const {
  if (node_mode_ == NodeMode::kNone) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<wire::ListedDevice> devices, List());
  std::map<std::string, DevNum> live;
  for (const wire::ListedDevice& d : devices) {
    absl::StatusOr<std::optional<DeviceInfo>> info = Find(DevNum(d.dev));
    if (!info.ok()) return info.status();
    if (!info->has_value() || !(*info)->live_table()) continue;
    live[d.name] = d.dev;
    RETURN_IF_ERROR(internal::MakeNode(NodePath(d.name), d.dev));
  }
  std::string dir = absl::StrCat(options_.dev_dir, "/mapper");
  DIR* dp = ::opendir(dir.c_str());
  if (dp == nullptr) return absl::OkStatus();
  std::vector<std::string> stale;
  while (struct dirent* e = ::readdir(dp)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || n == "control" || n.rfind(".dmthin-", 0) == 0) continue;
    if (!live.count(n)) stale.push_back(n);
  }
  ::closedir(dp);
  for (const std::string& n : stale) {
    std::string path = NodePath(n);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (S_ISBLK(st.st_mode) || S_ISLNK(st.st_mode)) RETURN_IF_ERROR(internal::RemoveNode(path));
  }
  return absl::OkStatus();
}

absl::StatusOr<EventPoller> EventPoller::Open(const Control& control) {
  int fd = ::open(control.options().control_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("open ", control.options().control_path));
  return EventPoller(base::UniqueFd(fd), &control);
}

absl::Status EventPoller::Arm() {
  wire::Request req;
  req.command = Command::kDevArmPoll;
  return control_->RunOn(fd_.get(), req, [](const wire::Response&) { return absl::OkStatus(); },
                         "");
}

absl::StatusOr<bool> EventPoller::Wait(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    struct pollfd p = {fd_.get(), POLLIN, 0};
    absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
    int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(errno, "poll dm control");
    }
    return n > 0 && (p.revents & POLLIN);
  }
}

}  // namespace dm
