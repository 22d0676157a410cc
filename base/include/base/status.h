// Status helpers shared by every dmthin layer.
//
// Every fallible call returns absl::Status / absl::StatusOr. A failure that
// came from a system call carries its errno as a payload (so callers can
// branch on EBUSY, ENOENT, ...) and a message saying what was being done.
#ifndef DMTHIN_BASE_STATUS_H_
#define DMTHIN_BASE_STATUS_H_

#include <optional>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base {

// A status for a failed system call: code mapped from `err`, message
// "<what>: <strerror(err)>", and `err` attached as a payload.
absl::Status ErrnoError(int err, absl::string_view what);

// `status` (not OK) with `err` attached, for a failure that means an errno
// without coming from a system call (e.g. EBUSY for "device is open").
absl::Status WithErrno(absl::Status status, int err);

// The errno attached by ErrnoError or WithErrno, if any.
std::optional<int> GetErrno(const absl::Status& status);

// True if `status` carries errno `err`.
inline bool HasErrno(const absl::Status& status, int err) {
  auto e = GetErrno(status);
  return e.has_value() && *e == err;
}

// Prefixes the message with context ("while X: ") and keeps code and payloads.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace base
DMTHIN_API_END

// RETURN_IF_ERROR(expr): returns expr's status from the enclosing function if
// it is not OK.
#define DMTHIN_CONCAT_INNER_(a, b) a##b
#define DMTHIN_CONCAT_(a, b) DMTHIN_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                                 \
  do {                                                        \
    ::absl::Status dmthin_status_ = (expr);                   \
    if (!dmthin_status_.ok()) return dmthin_status_;          \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates a StatusOr; on error returns its
// status, otherwise moves the value into lhs (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr)                                          \
  ASSIGN_OR_RETURN_IMPL_(DMTHIN_CONCAT_(dmthin_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(var, lhs, expr) \
  auto var = (expr);                           \
  if (!var.ok()) return std::move(var).status(); \
  lhs = std::move(var).value()

#endif  // DMTHIN_BASE_STATUS_H_
