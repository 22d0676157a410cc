// Unix sockets of the tools' servers (dmthin-snapshotter,
// dmthin-docker-plugin): claiming the path and restricting who may connect.
#ifndef DMTHIN_TOOLS_COMMON_UNIX_SOCKET_H_
#define DMTHIN_TOOLS_COMMON_UNIX_SOCKET_H_

#include <string>

#include "absl/status/status.h"

namespace cli {

// Makes `path` free for a new socket: a socket left by a server that is gone
// is removed; a live one (it accepts a connection), or anything that is not
// a socket, is refused (FailedPrecondition). InvalidArgument if `path` does
// not fit in sockaddr_un.
absl::Status ClaimSocketPath(const std::string& path);

// Root-only socket (0600), or 0660 owned by `group` (a name) when one is
// named. Bind under umask 0177 so the socket is never more open than this.
absl::Status RestrictSocket(const std::string& path, const std::string& group);

}  // namespace cli

#endif  // DMTHIN_TOOLS_COMMON_UNIX_SOCKET_H_
