#include "tools/docker-plugin/router.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dockerplugin {

void ReplyJson(httplib::Response& res, const absl::StatusOr<Json>& reply) {
  if (reply.ok()) {
    res.status = 200;
    res.set_content(Encode(*reply), kMediaType);
  } else {
    res.status = 500;
    res.set_content(EncodeError(reply.status().message()), kMediaType);
  }
}

bool HasBody(const httplib::Request& req) {
  return req.has_header("Content-Length") ||
         req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
}

void Router::AddRole(const std::string& role) { roles_.push_back(role); }

void Router::HandleJson(const std::string& method, JsonHandler handler) {
  json_[method] = [handler = std::move(handler)](const std::string& body, httplib::Response& res) {
    ReplyJson(res, handler(body));
  };
}

void Router::HandleJsonIn(const std::string& method, ReplyHandler handler) {
  json_[method] = std::move(handler);
}

void Router::HandleStream(const std::string& method, StreamHandler handler) {
  stream_[method] = std::move(handler);
}

void Router::Install(httplib::Server& server) {
  server.Post(".*", [this](const httplib::Request& req, httplib::Response& res,
                           const httplib::ContentReader& reader) { Dispatch(req, res, reader); });
}

void Router::Dispatch(const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader& reader) const {
  std::string method = req.path.size() > 1 && req.path[0] == '/' ? req.path.substr(1) : req.path;
  if (auto it = stream_.find(method); it != stream_.end()) {
    if (HasBody(req)) return it->second(req, res, reader);
    httplib::ContentReader empty([](httplib::ContentReceiver) { return true; },
                                 [](httplib::MultipartContentHeader, httplib::ContentReceiver) { return true; });
    return it->second(req, res, empty);
  }
  // Every JSON method reads its whole (small) body first, unknown ones too,
  // so the connection stays usable.
  std::string body;
  bool too_long = false;
  bool read = !HasBody(req) || reader([&](const char* data, size_t len) {
    if (body.size() + len > kMaxJsonBody) {
      too_long = true;
      return false;
    }
    body.append(data, len);
    return true;
  });
  if (too_long) {
    res.set_header("Connection", "close");
    ReplyJson(res, absl::InvalidArgumentError(
                       absl::StrCat("request body over ", kMaxJsonBody, " bytes")));
    return;
  }
  if (!read) {
    res.set_header("Connection", "close");
    ReplyJson(res, absl::InvalidArgumentError("could not read the request body"));
    return;
  }
  if (method == "Plugin.Activate") {
    Json implements = Json::array();
    for (const std::string& role : roles_) implements.push_back(role);
    ReplyJson(res, Json{{"Implements", implements}});
    return;
  }
  auto it = json_.find(method);
  if (it == json_.end()) {
    res.status = 404;
    res.set_content(EncodeError(absl::StrCat("plugin has no method ", method)), kMediaType);
    return;
  }
  it->second(body, res);
}

}  // namespace dockerplugin
