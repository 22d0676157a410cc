// The VolumeDriver role: Docker's volume plugin protocol (moby
// volume/drivers/proxy.go) served from a libvolume store. Options of
// Create: size (e.g. 64M), fs (ext4, xfs: thin volumes), from (a volume to
// snapshot), nocopy (mark the volume populated: nothing is ever copied in),
// backend (thin, directory). Mount/Unmount count references per caller id
// (docker: one per container; podman: one constant id) — see volume/store.h.
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_VOLUME_ROLE_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_VOLUME_ROLE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tools/docker-plugin/codec.h"
#include "tools/docker-plugin/router.h"
#include "volume/store.h"

namespace dockerplugin {

class VolumeDriverRole {
 public:
  explicit VolumeDriverRole(std::unique_ptr<volume::VolumeStore> store);

  // Adds "VolumeDriver" and its methods to `router`.
  void Register(Router& router);

 private:
  absl::StatusOr<Json> Create(const std::string& body);
  absl::StatusOr<Json> Remove(const std::string& body);
  absl::StatusOr<Json> Mount(const std::string& body);
  absl::StatusOr<Json> Unmount(const std::string& body);
  absl::StatusOr<Json> Path(const std::string& body);
  absl::StatusOr<Json> Get(const std::string& body);
  absl::StatusOr<Json> List();

  std::unique_ptr<volume::VolumeStore> store_;
};

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_VOLUME_ROLE_H_
