#include "base/status.h"

#include <cstring>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"

namespace base {
namespace {
constexpr absl::string_view kErrnoPayload = "dmthin.errno";
}  // namespace

absl::Status ErrnoError(int err, absl::string_view what) {
  absl::Status status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, ": ", std::strerror(err)));
  status.SetPayload(kErrnoPayload, absl::Cord(std::to_string(err)));
  return status;
}

absl::Status WithErrno(absl::Status status, int err) {
  if (status.ok()) return status;
  status.SetPayload(kErrnoPayload, absl::Cord(std::to_string(err)));
  return status;
}

std::optional<int> GetErrno(const absl::Status& status) {
  auto payload = status.GetPayload(kErrnoPayload);
  if (!payload.has_value()) return std::nullopt;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &err)) return std::nullopt;
  return err;
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& p) {
    out.SetPayload(url, p);
  });
  return out;
}

}  // namespace base
