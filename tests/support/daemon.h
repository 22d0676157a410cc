// Test support: a server the test starts in the background (argv vector,
// output to a log file) and always stops: Stop() signals and reaps it, the
// destructor kills what is still running.
#ifndef DMTHIN_TESTS_SUPPORT_DAEMON_H_
#define DMTHIN_TESTS_SUPPORT_DAEMON_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace testsupport {

class Daemon {
 public:
  // Starts argv (argv[0] looked up in PATH; `env` entries "K=V" added to the
  // environment) with stdin from /dev/null and stdout+stderr appended to
  // `log_path`.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const std::vector<std::string>& argv,
                                                       const std::string& log_path,
                                                       const std::vector<std::string>& env = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // Waits until `path` exists (a socket, a pid file), failing if the daemon
  // exits first or `timeout` passes.
  absl::Status WaitForPath(const std::string& path, absl::Duration timeout = absl::Seconds(20));
  // Waits until the unix socket `path` accepts a connection (a socket file
  // exists from bind(), before listen()).
  absl::Status WaitForListening(const std::string& path, absl::Duration timeout = absl::Seconds(20));
  // Sends `sig` and reaps the process: its exit code, or 128 + signal.
  // After `timeout` it is killed (SIGKILL) and DeadlineExceeded returned.
  absl::StatusOr<int> Stop(int sig, absl::Duration timeout = absl::Seconds(30));
  // The log so far.
  std::string Log() const;

 private:
  Daemon(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  int status_ = 0;
  bool reaped_ = false;
  std::string log_path_;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_DAEMON_H_
