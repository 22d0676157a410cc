#include "tests/support/oci_image.h"

#include <sys/xattr.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"

namespace testsupport {
namespace {

namespace fs = std::filesystem;

void Must(const RunResult& r) {
  if (!r.ok()) throw std::runtime_error(r.Describe());
}

void SetXattr(const std::string& path, const std::string& name, const std::string& value) {
  if (lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) {
    throw std::runtime_error("setxattr " + path + ": " + strerror(errno));
  }
}

nlohmann::json ReadJson(const std::string& path) {
  auto json = nlohmann::json::parse(ReadFileOrEmpty(path), nullptr, false);
  if (json.is_discarded()) throw std::runtime_error(path + ": not JSON");
  return json;
}

nlohmann::json ReadIndex(const std::string& layout) {
  auto index = ReadJson(layout + "/index.json");
  if (!index.contains("manifests") || !index["manifests"].is_array() || index["manifests"].empty()) {
    throw std::runtime_error(layout + "/index.json: not an image index with manifests");
  }
  return index;
}

// `blobs/` and every blob of the layout as tar entries.
void AppendBlobs(const std::string& layout, std::vector<TarEntry>& entries) {
  entries.push_back({.path = "blobs", .type = '5', .mode = 0755});
  for (const auto& algo : fs::directory_iterator(layout + "/blobs")) {
    std::string dir = "blobs/" + algo.path().filename().string();
    entries.push_back({.path = dir, .type = '5', .mode = 0755});
    for (const auto& blob : fs::directory_iterator(algo.path())) {
      bool ok = false;
      std::string data = ReadFileOrEmpty(blob.path().string(), &ok);
      if (!ok) throw std::runtime_error("read " + blob.path().string());
      entries.push_back({.path = dir + "/" + blob.path().filename().string(), .data = std::move(data)});
    }
  }
}

// "sha256:abc" -> "blobs/sha256/abc", the blob's path in the layout.
std::string BlobPath(const nlohmann::json& descriptor) {
  std::string digest = descriptor.at("digest").get<std::string>();
  auto colon = digest.find(':');
  if (colon == std::string::npos) throw std::runtime_error("digest without algorithm: " + digest);
  return "blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
}

// The OCI image layout umoci made at `layout` as a tar (what `ctr images
// import` reads as an OCI archive), its index's manifests named `name`:
// containerd names an imported image by the manifest descriptor's
// io.containerd.image.name annotation (umoci's org.opencontainers.image.ref.name
// is only the tag, which ctr would take as the whole name).
std::string LayoutArchive(const std::string& layout, const std::string& name) {
  auto index = ReadIndex(layout);
  std::string tag = name.substr(name.rfind(':') + 1);
  for (auto& m : index["manifests"]) {
    m["annotations"]["io.containerd.image.name"] = name;
    m["annotations"]["org.opencontainers.image.ref.name"] = tag;
  }
  std::vector<TarEntry> entries;
  entries.push_back({.path = "oci-layout", .data = ReadFileOrEmpty(layout + "/oci-layout")});
  entries.push_back({.path = "index.json", .data = index.dump()});
  AppendBlobs(layout, entries);
  return BuildTar(entries);
}

}  // namespace

std::string DockerArchive(const std::string& layout, const std::string& ref) {
  auto index = ReadIndex(layout);
  const auto manifest = ReadJson(layout + "/" + BlobPath(index["manifests"][0]));
  // docker save's format (moby image/tarexport): manifest.json names the
  // config and the layer tars by their paths in the archive; the layout's
  // blobs serve as they are (docker load decompresses gzip layers).
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& layer : manifest.at("layers")) layers.push_back(BlobPath(layer));
  nlohmann::json docker = nlohmann::json::array();
  docker.push_back({{"Config", BlobPath(manifest.at("config"))},
                    {"RepoTags", nlohmann::json::array({ref})},
                    {"Layers", layers}});
  std::vector<TarEntry> entries;
  entries.push_back({.path = "manifest.json", .data = docker.dump()});
  AppendBlobs(layout, entries);
  return BuildTar(entries);
}

std::string MakeTestImage(const std::string& dir, const std::string& name) {
  std::string layout = dir + "/oci", bundle = dir + "/bundle", rootfs = bundle + "/rootfs";
  std::string image = layout + ":t";
  Must(Run({"umoci", "init", "--layout", layout}));
  Must(Run({"umoci", "new", "--image", image}));
  Must(Run({"umoci", "unpack", "--image", image, bundle}));
  for (const char* d : {"/bin", "/etc", "/deldir/a", "/keep"}) fs::create_directories(rootfs + d);
  fs::copy_file("/bin/busybox", rootfs + "/bin/busybox");
  for (const char* tool : {"sh", "cat", "test", "true"}) fs::create_symlink("busybox", rootfs + "/bin/" + tool);
  WriteFileOrDie(rootfs + "/etc/hello", "hello\n");
  WriteFileOrDie(rootfs + "/delfile", "deleted in the top layer\n");
  WriteFileOrDie(rootfs + "/deldir/a/b", "deleted with its directory\n");
  WriteFileOrDie(rootfs + "/keep/orig", "linked in the top layer\n");
  WriteFileOrDie(rootfs + "/keep/x", "xattr changes\n");
  SetXattr(rootfs + "/keep/x", "user.color", "red");
  // --refresh-bundle: the next repack is a diff against this one.
  Must(Run({"umoci", "repack", "--refresh-bundle", "--image", image, bundle}));
  fs::remove(rootfs + "/delfile");
  fs::remove_all(rootfs + "/deldir");
  SetXattr(rootfs + "/keep/x", "user.color", "blue");
  fs::create_hard_link(rootfs + "/keep/orig", rootfs + "/keep/link");
  WriteFileOrDie(rootfs + "/top.txt", "top layer\n");
  Must(Run({"umoci", "repack", "--refresh-bundle", "--image", image, bundle}));
  std::string archive = dir + "/image.tar";
  WriteFileOrDie(archive, LayoutArchive(layout, name));
  return archive;
}

}  // namespace testsupport
