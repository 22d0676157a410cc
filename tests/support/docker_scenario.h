// The docker scenario on dmthin-docker-plugin, shared by the host tier
// (tests/host/docker_dockerd_test: overlay, vfs, btrfs) and the vm tier
// (tests/vm/docker_devmapper_test: devicemapper): docker load, a run that
// adds, deletes and changes files, exact docker diff, the stopped
// container's layer found through docker inspect and mounted read-only with
// graphctl, commit and a run of the committed image, the export compared
// with dockerd's own vfs, a restart of plugin and dockerd keeping images and
// the stopped container, and rm/rmi leaving the layer store empty.
#ifndef DMTHIN_TESTS_SUPPORT_DOCKER_SCENARIO_H_
#define DMTHIN_TESTS_SUPPORT_DOCKER_SCENARIO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace testsupport {

// The scenario's image, its docker-archive and the container's script.
inline constexpr char kDockerTestImage[] = "dmthin-test:1";
// A docker-archive of kDockerTestImage in `dir`: busybox-static, /etc/passwd,
// /etc/doomed, /etc/kept.
absl::StatusOr<std::string> BuildDockerTestImage(const std::string& dir);
// The export of the scenario's container under dockerd's built-in vfs
// driver, unpacked under `dir` and fingerprinted.
absl::StatusOr<std::string> DockerVfsReference(const std::string& dir, const std::string& image_tar);

struct DockerScenario {
  std::string driver;                     // the plugin's --driver
  std::vector<std::string> storage_opts;  // the plugin's (and graphctl's) --storage-opt
  std::string plugin_root;                // the plugin's --root (the layer store)
  std::string dir;                        // scratch: dockerd's roots, logs, exports
  std::string image_tar;                  // BuildDockerTestImage
  std::string reference;                  // DockerVfsReference; "" = no export check
  bool run_after_restart = true;          // one more docker run after the restart
  bool own_containerd = false;            // Dockerd::OwnContainerd (the vm guest)
};

// Runs the scenario with gtest assertions (a fatal failure returns early;
// plugin and dockerd are stopped either way).
void RunDockerScenario(const DockerScenario& s);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_DOCKER_SCENARIO_H_
