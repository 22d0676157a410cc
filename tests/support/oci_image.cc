#include "tests/support/oci_image.h"

#include <sys/xattr.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

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

}  // namespace

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
  Must(Run({"skopeo", "copy", "oci:" + image, "docker-archive:" + archive + ":" + name}));
  return archive;
}

}  // namespace testsupport
