// Test support for Docker: a dockerd started by the test with its own data
// root, exec root, pid file, API socket and CLI config under one directory
// (so runs never share state), and small images built with umoci and written as docker-archive tars here.
// Used by tests/host/docker_dockerd_test and tests/bench/docker_bench.
#ifndef DMTHIN_TESTS_SUPPORT_DOCKERD_H_
#define DMTHIN_TESTS_SUPPORT_DOCKERD_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/support/containerd.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"

namespace testsupport {

class Dockerd {
 public:
  // `storage_driver`: a built-in one ("vfs", "overlay2") or a plugin's name.
  // `storage_opts`: dockerd's --storage-opt values.
  Dockerd(std::string dir, std::string storage_driver, std::vector<std::string> storage_opts = {})
      : dir_(std::move(dir)), driver_(std::move(storage_driver)), storage_opts_(std::move(storage_opts)) {}

  // Start containerd ourselves (TestContainerd, in DIR/containerd) and give
  // dockerd its socket (--containerd) rather than let dockerd start one: in
  // the vm guest under TCG containerd can take longer to answer than dockerd
  // waits for the containerd it supervises.
  void OwnContainerd() { own_containerd_ = true; }
  ~Dockerd() { Stop(); }

  // `dockerd --experimental --iptables=false --ip-masq=false --bridge=none`;
  // returns when its API socket answers.
  absl::Status Start();
  // Graceful (SIGTERM): dockerd stops its containerd and calls the graph
  // driver's Cleanup.
  void Stop();

  // `docker --config DIR/cli -H unix://DIR/docker.sock ARGS...`.
  RunResult Docker(const std::vector<std::string>& args) const;
  std::string Log() const { return daemon_ ? daemon_->Log() : ""; }

 private:
  std::string Sock() const { return dir_ + "/docker.sock"; }
  std::string dir_, driver_;
  std::vector<std::string> storage_opts_;
  bool own_containerd_ = false;
  std::unique_ptr<TestContainerd> containerd_;
  std::unique_ptr<Daemon> daemon_;
};

// A docker-archive at DIR/image.tar holding image `ref`: a first layer with
// busybox-static (/bin/busybox and the `applets` as symlinks to it) and
// `files` (path in the image → content), then one layer per
// `extra_layers` entry (a host directory copied to a path in the image).
// Made with umoci (OCI layout in DIR/oci), written as a docker-archive here.
absl::StatusOr<std::string> BuildBusyboxImage(
    const std::string& dir, const std::string& ref, const std::vector<std::string>& applets,
    const std::map<std::string, std::string>& files,
    const std::vector<std::pair<std::string, std::string>>& extra_layers = {});

// The same image with a first layer unpacked from `rootfs_tar` (a root
// filesystem tarball, e.g. a debootstrap) instead of busybox, then
// `extra_layers`.
absl::StatusOr<std::string> BuildRootfsImage(
    const std::string& dir, const std::string& ref, const std::string& rootfs_tar,
    const std::vector<std::pair<std::string, std::string>>& extra_layers);

// "" if dockerd, docker, umoci and busybox are all here, else what
// is missing.
std::string MissingDockerTools();

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_DOCKERD_H_
