// An HTTP server (cpp-httplib) on a unix socket that only root — or root and
// one group the admin names — may connect to.
//
// The socket is bound under umask 0177, so it is 0600 from its first moment;
// with a group it is then chowned and made 0660. A stale socket left by a
// crashed server is replaced; a path where another server answers, or that
// is not a socket, is refused (tools/common/unix_socket.h, shared with
// dmthin-snapshotter). The socket is removed when the server goes.
//
// Stop() (from any thread, e.g. on SIGTERM) stops accepting; Serve() returns
// once every request already received has been answered.
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_UNIX_SERVER_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_UNIX_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "httplib.h"

namespace dockerplugin {

class UnixServer {
 public:
  // Binds `path` (parent directories made 0755 if missing); `group` "" =
  // root only.
  static absl::StatusOr<std::unique_ptr<UnixServer>> Listen(const std::string& path,
                                                            const std::string& group);
  ~UnixServer();

  httplib::Server& http() { return http_; }
  const std::string& path() const { return path_; }

  // Serves until Stop(); an error if the accept loop failed.
  absl::Status Serve();
  void Stop();

 private:
  UnixServer() = default;

  httplib::Server http_;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_UNIX_SERVER_H_
