#include "tests/support/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/status.h"

extern char** environ;

namespace testsupport {

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const std::vector<std::string>& argv,
                                                      const std::string& log_path,
                                                      const std::vector<std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("Daemon::Start needs a program");
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; ++e) envs.emplace_back(*e);
  for (const std::string& kv : env) envs.push_back(kv);
  std::vector<char*> cenv;
  for (auto& e : envs) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return base::ErrnoError(rc, absl::StrCat("spawn ", argv[0]));
  return std::unique_ptr<Daemon>(new Daemon(pid, log_path));
}

Daemon::~Daemon() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
}

bool Daemon::running() {
  if (reaped_) return false;
  pid_t r = ::waitpid(pid_, &status_, WNOHANG);
  if (r == pid_) reaped_ = true;
  return !reaped_;
}

absl::Status Daemon::WaitForPath(const std::string& path, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  struct stat st;
  while (::lstat(path.c_str(), &st) != 0) {
    if (!running()) {
      return absl::FailedPreconditionError(absl::StrCat("exited before ", path, " appeared; log:\n", Log()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(path, " did not appear in ", absl::FormatDuration(timeout),
                                                      "; log:\n", Log()));
    }
    ::usleep(10000);
  }
  return absl::OkStatus();
}

absl::Status Daemon::WaitForListening(const std::string& path, absl::Duration timeout) {
  struct sockaddr_un addr = {};
  if (path.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError(path + ": socket path too long");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return base::ErrnoError(errno, "socket");
    int rc = ::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr));
    ::close(fd);
    if (rc == 0) return absl::OkStatus();
    if (!running()) {
      return absl::FailedPreconditionError(absl::StrCat("exited before listening on ", path, "; log:\n", Log()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("nothing listening on ", path, " after ",
                                                      absl::FormatDuration(timeout), "; log:\n", Log()));
    }
    ::usleep(10000);
  }
}

absl::StatusOr<int> Daemon::Stop(int sig, absl::Duration timeout) {
  bool killed = false;
  if (!reaped_) {
    ::kill(pid_, sig);
    absl::Time deadline = absl::Now() + timeout;
    while (running()) {
      if (absl::Now() > deadline && !killed) {
        ::kill(pid_, SIGKILL);
        killed = true;
      }
      ::usleep(10000);
    }
  }
  if (killed) return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " ignored signal ", sig));
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  return 128 + WTERMSIG(status_);
}

std::string Daemon::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace testsupport
