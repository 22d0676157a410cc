// Test support: Debian's containerd started for one test, with its own
// config, root, state and sockets under a directory the caller owns (the
// CRI plugin disabled), optionally with a proxy snapshotter plugin; stopped
// (SIGTERM, then SIGKILL) when the object goes.
#ifndef DMTHIN_TESTS_SUPPORT_CONTAINERD_H_
#define DMTHIN_TESTS_SUPPORT_CONTAINERD_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"

namespace testsupport {

class TestContainerd {
 public:
  // "" when containerd, ctr, the runc shim and runc are all in PATH, else
  // what is missing.
  static std::string Missing();
  // Starts containerd in `dir` (config.toml, root/, state/, *.sock) with
  // proxy snapshotter `proxy_name` on `proxy_socket` (none if empty),
  // `extra_config` appended to its config (TOML tables, e.g. a built-in
  // snapshotter's settings) and `env` ("K=V") added to its environment, and
  // waits until it serves.
  static absl::StatusOr<std::unique_ptr<TestContainerd>> Start(const std::string& dir,
                                                               const std::string& proxy_name,
                                                               const std::string& proxy_socket,
                                                               const std::string& extra_config = "",
                                                               const std::vector<std::string>& env = {});
  ~TestContainerd();

  // ctr --address <ours> ARGS...
  RunResult Ctr(const std::vector<std::string>& args) const;
  const std::string& address() const { return address_; }
  std::string Log() const { return daemon_->Log(); }
  // SIGTERM; the exit code.
  absl::StatusOr<int> Stop();

 private:
  TestContainerd() = default;
  std::string address_;
  std::unique_ptr<Daemon> daemon_;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_CONTAINERD_H_
