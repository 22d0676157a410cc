#include "tests/support/containerd.h"

#include <signal.h>

#include "tests/support/graph_tar.h"

namespace testsupport {

std::string TestContainerd::Missing() {
  for (const char* p : {"containerd", "ctr", "containerd-shim-runc-v2", "runc"}) {
    if (!HaveProgram(p)) return std::string("no ") + p + " in PATH";
  }
  return "";
}

absl::StatusOr<std::unique_ptr<TestContainerd>> TestContainerd::Start(const std::string& dir,
                                                                      const std::string& proxy_name,
                                                                      const std::string& proxy_socket,
                                                                      const std::string& extra_config,
                                                                      const std::vector<std::string>& env) {
  std::unique_ptr<TestContainerd> c(new TestContainerd());
  c->address_ = dir + "/containerd.sock";
  std::string config = "version = 2\n"
                       "root = \"" + dir + "/root\"\n"
                       "state = \"" + dir + "/state\"\n"
                       "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                       "[grpc]\n  address = \"" + c->address_ + "\"\n"
                       "[ttrpc]\n  address = \"" + dir + "/containerd-ttrpc.sock\"\n"
                       "[debug]\n  address = \"" + dir + "/containerd-debug.sock\"\n";
  if (!proxy_socket.empty()) {
    config += "[proxy_plugins." + proxy_name + "]\n  type = \"snapshot\"\n  address = \"" + proxy_socket + "\"\n";
  }
  config += extra_config;
  WriteFileOrDie(dir + "/config.toml", config);
  auto d = Daemon::Start({"containerd", "--config", dir + "/config.toml"}, dir + "/containerd.log", env);
  if (!d.ok()) return d.status();
  c->daemon_ = std::move(*d);
  // Slow under TCG in the vm guest (~10 s on a loaded machine).
  if (absl::Status s = c->daemon_->WaitForListening(c->address_, absl::Seconds(120)); !s.ok()) return s;
  return c;
}

TestContainerd::~TestContainerd() {
  if (daemon_ != nullptr) (void)daemon_->Stop(SIGTERM);
}

RunResult TestContainerd::Ctr(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"ctr", "--address", address_};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

absl::StatusOr<int> TestContainerd::Stop() { return daemon_->Stop(SIGTERM); }

}  // namespace testsupport
