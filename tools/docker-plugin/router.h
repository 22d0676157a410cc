// The plugin protocol's dispatch: every call is `POST /<Role>.<Method>`.
// Roles (GraphDriver here; VolumeDriver can join the same process) register
// their methods; `/Plugin.Activate` answers `{"Implements": [roles...]}`;
// an unknown method is 404 (Docker reads that as "not implemented").
//
// Two kinds of method:
//  - JSON: the body (at most kMaxJsonBody bytes) is handed over as a string,
//    the handler returns a JSON reply or an error, sent as HTTP 500 with
//    `{"Err": message}` (moby's plugin client reads Err from any status).
//  - JSON in, any reply out: as JSON, but the handler fills the response
//    itself (a layer tarball streamed out).
//  - Streaming: the handler gets httplib's request, response and content
//    reader, for request bodies that are layer tarballs.
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_ROUTER_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_ROUTER_H_

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "httplib.h"
#include "tools/docker-plugin/codec.h"

namespace dockerplugin {

// Docker's plugin media type (moby pkg/plugins: VersionMimetype).
inline constexpr char kMediaType[] = "application/vnd.docker.plugins.v1+json";

// The largest JSON request body read (Docker's are well under 1 KiB).
inline constexpr size_t kMaxJsonBody = 1 << 20;

class Router {
 public:
  using JsonHandler = std::function<absl::StatusOr<Json>(const std::string& body)>;
  using ReplyHandler = std::function<void(const std::string& body, httplib::Response&)>;
  using StreamHandler = std::function<void(const httplib::Request&, httplib::Response&,
                                           const httplib::ContentReader&)>;

  // A role named in /Plugin.Activate's Implements ("GraphDriver").
  void AddRole(const std::string& role);
  // `method` is "GraphDriver.Create" (served at /GraphDriver.Create).
  void HandleJson(const std::string& method, JsonHandler handler);
  void HandleJsonIn(const std::string& method, ReplyHandler handler);
  void HandleStream(const std::string& method, StreamHandler handler);

  // Registers the router with `server` (one POST route for every path).
  void Install(httplib::Server& server);

  const std::vector<std::string>& roles() const { return roles_; }

 private:
  void Dispatch(const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& reader) const;

  std::vector<std::string> roles_;
  std::map<std::string, ReplyHandler> json_;
  std::map<std::string, StreamHandler> stream_;
};

// A request with neither Content-Length nor chunked encoding has no body
// (httplib would otherwise read one until the peer closes).
bool HasBody(const httplib::Request& req);

// Sets `res` to a JSON reply (200) or, for an error, {"Err": ...} (500).
void ReplyJson(httplib::Response& res, const absl::StatusOr<Json>& reply);

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_ROUTER_H_
