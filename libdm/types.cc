#include "libdm/types.h"

#include <linux/dm-ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"

namespace dm {
namespace {

bool HasControlChar(absl::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

}  // namespace

absl::StatusOr<Name> Name::Create(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("device name is empty");
  if (name.size() >= DM_NAME_LEN)
    return absl::InvalidArgumentError(absl::StrCat(
        "device name '", name, "' is ", name.size(), " bytes; the limit is ",
        DM_NAME_LEN - 1));
  if (name.find('/') != absl::string_view::npos)
    return absl::InvalidArgumentError(
        absl::StrCat("device name '", name, "' contains '/'"));
  if (HasControlChar(name))
    return absl::InvalidArgumentError(
        absl::StrCat("device name '", absl::CHexEscape(name),
                     "' contains a control character"));
  if (name == "." || name == ".." || name == DM_CONTROL_NODE)
    return absl::InvalidArgumentError(
        absl::StrCat("device name '", name, "' is reserved"));
  return Name(std::string(name));
}

Name Name::OrDie(absl::string_view name) {
  auto n = Create(name);
  if (!n.ok()) std::abort();
  return *std::move(n);
}

absl::StatusOr<Uuid> Uuid::Create(absl::string_view uuid) {
  if (uuid.empty()) return absl::InvalidArgumentError("device uuid is empty");
  if (uuid.size() >= DM_UUID_LEN)
    return absl::InvalidArgumentError(absl::StrCat(
        "device uuid '", uuid, "' is ", uuid.size(), " bytes; the limit is ",
        DM_UUID_LEN - 1));
  if (HasControlChar(uuid))
    return absl::InvalidArgumentError(
        absl::StrCat("device uuid '", absl::CHexEscape(uuid),
                     "' contains a control character"));
  return Uuid(std::string(uuid));
}

Uuid Uuid::OrDie(absl::string_view uuid) {
  auto u = Create(uuid);
  if (!u.ok()) std::abort();
  return *std::move(u);
}

dev_t DevNum::ToDevT() const { return makedev(major, minor); }

DevNum DevNum::FromDevT(dev_t dev) {
  return DevNum{static_cast<uint32_t>(::major(dev)), static_cast<uint32_t>(::minor(dev))};
}

uint64_t DevNum::ToKernel() const {
  // huge_encode_dev == new_encode_dev on the kernel's 12:20 dev_t.
  return (uint64_t{minor} & 0xff) | (uint64_t{major & 0xfff} << 8) |
         ((uint64_t{minor} & ~uint64_t{0xff}) << 12);
}

DevNum DevNum::FromKernel(uint64_t dev) {
  return DevNum{static_cast<uint32_t>((dev & 0xfff00) >> 8),
                static_cast<uint32_t>((dev & 0xff) | ((dev >> 12) & 0xfff00))};
}

std::string DevNum::ToString() const { return absl::StrCat(major, ":", minor); }

absl::StatusOr<DevNum> DevNum::Parse(absl::string_view s) {
  std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(s, absl::MaxSplits(':', 1));
  DevNum d;
  auto digits = [](absl::string_view p) {
    if (p.empty() || p.size() > 10) return false;
    for (char c : p)
      if (c < '0' || c > '9') return false;
    return true;
  };
  if (!digits(parts.first) || !digits(parts.second) ||
      !absl::SimpleAtoi(parts.first, &d.major) || !absl::SimpleAtoi(parts.second, &d.minor) ||
      d.major > 0xfff || d.minor > 0xfffff)
    return absl::InvalidArgumentError(
        absl::StrCat("'", s, "' is not a device number (MAJOR:MINOR)"));
  return d;
}

absl::StatusOr<DevNum> DevNum::FromPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
  if (!S_ISBLK(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a block device"));
  return FromDevT(st.st_rdev);
}

std::string DevId::ToString() const {
  if (const Name* n = name()) return absl::StrCat("name=", n->str());
  if (const Uuid* u = uuid()) return absl::StrCat("uuid=", u->str());
  return absl::StrCat("dev=", dev()->ToString());
}

std::string Version::ToString() const { return absl::StrCat(major, ".", minor, ".", patch); }

}  // namespace dm
