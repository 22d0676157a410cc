#include "thinpool/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace thinpool {
namespace {

bool NameChar(char c, bool allow_dash) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '.' || (allow_dash && (c == '-' || c == '+'));
}

absl::Status ValidateName(absl::string_view kind, absl::string_view name,
                          size_t max_len, bool allow_dash) {
  if (name.empty() || name.size() > max_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid ", kind, " name '", name, "': must be 1-", max_len,
        " characters"));
  }
  if (name[0] == '.' || name[0] == '-' || name[0] == '+') {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid ", kind, " name '", name, "': must not start with '",
        name.substr(0, 1), "'"));
  }
  for (char c : name) {
    if (!NameChar(c, allow_dash)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid ", kind, " name '", absl::CHexEscape(name),
          "': only letters, digits, '_', '.'",
          allow_dash ? ", '-' and '+'" : "", " are allowed"));
    }
  }
  return absl::OkStatus();
}

// Creates `path` 0700 if missing; then insists it is a private directory.
absl::Status EnsurePrivateDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) < 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("creating state dir ", path));
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) < 0) {
    return base::ErrnoError(errno, absl::StrCat("stat ", path));
  }
  if (S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing state dir ", path, ": it is a symlink"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing state dir ", path, ": not a directory"));
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing state dir ", path, ": owned by uid ", st.st_uid));
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing state dir ", path, ": writable by group or others (mode ",
        absl::Hex(st.st_mode & 07777), "); chmod 0700 it"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidatePoolName(absl::string_view name) {
  return ValidateName("pool", name, 32, /*allow_dash=*/false);
}

absl::Status ValidateThinName(absl::string_view name) {
  return ValidateName("thin device", name, 80, /*allow_dash=*/true);
}

absl::StatusOr<std::unique_ptr<StateDir>> StateDir::Open(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("state dir must be an absolute path, got '", path, "'"));
  }
  std::string dir = path;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  RETURN_IF_ERROR(EnsurePrivateDir(dir));
  RETURN_IF_ERROR(EnsurePrivateDir(dir + "/.locks"));
  RETURN_IF_ERROR(EnsurePrivateDir(dir + "/pools"));
  ASSIGN_OR_RETURN(auto registry, Registry::Open(dir + "/.registry.db"));
  return std::unique_ptr<StateDir>(new StateDir(dir, std::move(registry)));
}

std::string StateDir::PoolDir(absl::string_view pool) const {
  return absl::StrCat(path_, "/", pool);
}

void PoolLock::Release() {
  if (!mu_.owns_lock()) return;
  (void)::flock(fd_, LOCK_UN);
  mu_.unlock();
}

PoolLock& PoolLock::operator=(PoolLock&& o) noexcept {
  if (this != &o) {
    Release();
    mu_ = std::move(o.mu_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

PoolLock::~PoolLock() { Release(); }

absl::StatusOr<PoolLock> StateDir::LockPool(absl::string_view pool) {
  RETURN_IF_ERROR(ValidatePoolName(pool));
  LockFile* file = nullptr;
  {
    std::lock_guard<std::mutex> g(lock_files_mu_);
    auto it = lock_files_.find(pool);
    if (it == lock_files_.end()) {
      it = lock_files_.emplace(std::string(pool), std::make_unique<LockFile>()).first;
    }
    file = it->second.get();
  }
  std::unique_lock<std::mutex> mu(file->mu);
  std::string path = absl::StrCat(path_, "/.locks/", pool, ".lock");
  if (!file->fd.valid()) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
    file->fd = base::UniqueFd(fd);
  }
  while (::flock(file->fd.get(), LOCK_EX) < 0) {
    if (errno != EINTR) return base::ErrnoError(errno, absl::StrCat("flock ", path));
  }
  return PoolLock(std::move(mu), file->fd.get());
}

}  // namespace thinpool
