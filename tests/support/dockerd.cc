#include "tests/support/dockerd.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "tests/support/oci_image.h"

namespace testsupport {
namespace {

absl::Status RunOk(const std::vector<std::string>& argv) {
  RunResult r = Run(argv);
  if (!r.ok()) return absl::InternalError(r.Describe());
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status Dockerd::Start() {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("creating ", dir_));
  }
  std::vector<std::string> argv = {"dockerd", "--experimental", "--iptables=false", "--ip-masq=false",
                                   "--bridge=none", "--storage-driver=" + driver_, "-H", "unix://" + Sock(),
                                   "--data-root", dir_ + "/data", "--exec-root", dir_ + "/exec",
                                   "--pidfile", dir_ + "/docker.pid"};
  for (const std::string& o : storage_opts_) argv.insert(argv.end(), {"--storage-opt", o});
  if (own_containerd_) {
    if (::mkdir((dir_ + "/containerd").c_str(), 0700) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("creating ", dir_, "/containerd"));
    }
    ASSIGN_OR_RETURN(containerd_, TestContainerd::Start(dir_ + "/containerd", "", ""));
    argv.push_back("--containerd=" + containerd_->address());
  }
  auto d = Daemon::Start(argv, dir_ + "/dockerd.log");
  if (!d.ok()) return d.status();
  daemon_ = std::move(*d);
  absl::Status up = daemon_->WaitForListening(Sock(), absl::Seconds(60));
  if (!up.ok()) return base::Annotate(up, absl::StrCat("dockerd did not come up:\n", daemon_->Log()));
  return absl::OkStatus();
}

void Dockerd::Stop() {
  if (daemon_) {
    daemon_->Stop(SIGTERM, absl::Seconds(60)).IgnoreError();
    daemon_.reset();
  }
  if (containerd_) {
    containerd_->Stop().IgnoreError();
    containerd_.reset();
  }
}

RunResult Dockerd::Docker(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"docker", "--config", dir_ + "/cli", "-H", "unix://" + Sock()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

namespace {

// umoci image in DIR/oci: a first layer that `fill` makes in the bundle's
// rootfs, one more per `extra_layers` entry, then a docker-archive
// DIR/image.tar of it (written here: skopeo's fixed-path blob-info cache
// panics in the vm tier's guest, see oci_image.h).
absl::StatusOr<std::string> BuildImage(const std::string& dir, const std::string& ref,
                                       const std::function<absl::Status(const std::string& rootfs)>& fill,
                                       const std::vector<std::pair<std::string, std::string>>& extra_layers) {
  std::string oci = dir + "/oci", image = oci + ":t", bundle = dir + "/bundle", rootfs = bundle + "/rootfs";
  RETURN_IF_ERROR(RunOk({"mkdir", "-p", dir}));
  RETURN_IF_ERROR(RunOk({"umoci", "init", "--layout", oci}));
  RETURN_IF_ERROR(RunOk({"umoci", "new", "--image", image}));
  RETURN_IF_ERROR(RunOk({"umoci", "unpack", "--image", image, bundle}));
  RETURN_IF_ERROR(fill(rootfs));
  RETURN_IF_ERROR(RunOk({"umoci", "repack", "--image", image, bundle}));
  for (const auto& [host_dir, path] : extra_layers) {
    RETURN_IF_ERROR(RunOk({"mkdir", "-p", (rootfs + path).substr(0, (rootfs + path).rfind('/'))}));
    RETURN_IF_ERROR(RunOk({"cp", "-a", "--", host_dir, rootfs + path}));
    RETURN_IF_ERROR(RunOk({"umoci", "repack", "--image", image, bundle}));
  }
  RETURN_IF_ERROR(RunOk({"umoci", "config", "--image", image, "--config.cmd", "/bin/sh"}));
  std::string tar = dir + "/image.tar";
  try {
    RETURN_IF_ERROR(WriteFile(tar, DockerArchive(oci, ref)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("docker archive of ", oci, ": ", e.what()));
  }
  return tar;
}

}  // namespace

absl::StatusOr<std::string> BuildBusyboxImage(const std::string& dir, const std::string& ref,
                                              const std::vector<std::string>& applets,
                                              const std::map<std::string, std::string>& files,
                                              const std::vector<std::pair<std::string, std::string>>& extra_layers) {
  auto fill = [&](const std::string& rootfs) -> absl::Status {
    RETURN_IF_ERROR(RunOk({"mkdir", "-p", rootfs + "/bin"}));
    RETURN_IF_ERROR(RunOk({"cp", "--", "/bin/busybox", rootfs + "/bin/busybox"}));
    for (const std::string& applet : applets) {
      if (::symlink("busybox", (rootfs + "/bin/" + applet).c_str()) != 0) {
        return base::ErrnoError(errno, absl::StrCat("symlink /bin/", applet));
      }
    }
    for (const auto& [path, content] : files) {
      RETURN_IF_ERROR(RunOk({"mkdir", "-p", (rootfs + path).substr(0, (rootfs + path).rfind('/'))}));
      RETURN_IF_ERROR(WriteFile(rootfs + path, content));
    }
    return absl::OkStatus();
  };
  return BuildImage(dir, ref, fill, extra_layers);
}

absl::StatusOr<std::string> BuildRootfsImage(const std::string& dir, const std::string& ref,
                                             const std::string& rootfs_tar,
                                             const std::vector<std::pair<std::string, std::string>>& extra_layers) {
  auto fill = [&](const std::string& rootfs) {
    return RunOk({"tar", "--numeric-owner", "-xpf", rootfs_tar, "-C", rootfs});
  };
  return BuildImage(dir, ref, fill, extra_layers);
}

std::string MissingDockerTools() {
  for (const char* tool : {"dockerd", "docker", "umoci", "busybox"}) {
    if (!HaveProgram(tool)) return absl::StrCat("no ", tool);
  }
  return "";
}

}  // namespace testsupport
