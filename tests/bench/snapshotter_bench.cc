// Benchmark: containerd on dmthin-snapshotter (proxy plugin) against one of
// containerd's built-in snapshotters, side by side in one run on one
// containerd: the test image (tests/support/oci_image) is imported into
// both (`ctr images import`), then N rounds of the steps below, the two
// taking turns at every step (the order flips each round, so both see the
// same machine load):
//   prepare  Snapshots.Prepare(KEY, TOP) through containerd's own API
//            socket (gRPC, what ctr and the CRI call; a new active snapshot)
//   mount    Snapshots.Mounts(KEY) and mount(8) of what it answers (then
//            umount, untimed)
//   remove   Snapshots.Remove(KEY)
//   run      `ctr run --rm IMAGE ID true`: prepare + mount + run + remove,
//            ctr's own start included (the same for both)
// Prepare, mount and remove go to containerd over one gRPC channel, so
// they time the snapshotter (through containerd), not a ctr process's start
// (~0.5 s in the vm tier's guest, more than our devicemapper prepare).
//
//   build/bench/snapshotter_bench [--runs N] [--driver overlay|devicemapper] [--data DIR]
//
// overlay (default, host): the overlay driver against built-in overlayfs.
// devicemapper (inside tests/vm/run): the devicemapper driver on its own
// loopback pool against built-in devmapper on a pool made with dmsetup
// over loop devices (containerd's documented recipe), both pools' files on
// an ext4 loop-mounted on the guest's tmpfs (see below), both with 1 GiB
// base devices. There is no udev in the guest:
// containerd (and the dmsetup it execs) get DM_DISABLE_UDEV=1, which makes
// libdevmapper create and remove the /dev/mapper nodes itself.
//
// Prints a markdown table of medians (ms) and the ratios; --data writes
// DIR/snapshotter-<driver>.dat (one row per operation, medians) for
// tests/bench/snapshotter_bench.gp.
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "tests/support/containerd.h"
#include "tests/support/daemon.h"
#include "tests/support/ext4_scratch.h"
#include "tests/support/oci_image.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/thinpool_cleanup.h"

namespace {

using testsupport::RunResult;
namespace snapshots = containerd::services::snapshots::v1;

constexpr char kImage[] = "docker.io/library/dmthin-bench:latest";

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Must(const RunResult& r) {
  if (!r.ok()) {
    std::fprintf(stderr, "snapshotter_bench: %s\n", r.Describe().c_str());
    std::exit(1);
  }
}

void Must(const absl::Status& s, const std::string& log = "") {
  if (!s.ok()) {
    std::fprintf(stderr, "snapshotter_bench: %s\n%s\n", s.ToString().c_str(), log.c_str());
    std::exit(1);
  }
}

// The image's top snapshot: the committed key that is nobody's parent.
std::string TopSnapshot(const testsupport::TestContainerd& c, const std::string& snapshotter) {
  RunResult ls = c.Ctr({"snapshots", "--snapshotter", snapshotter, "ls"});
  Must(ls);
  std::istringstream lines(ls.out);
  std::string line;
  std::getline(lines, line);  // header
  std::vector<std::string> keys;
  std::set<std::string> parents;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.empty()) continue;
    keys.push_back(f[0]);
    if (f.size() == 3) parents.insert(f[1]);
  }
  for (const std::string& k : keys) {
    if (parents.count(k) == 0) return k;
  }
  std::fprintf(stderr, "snapshotter_bench: no top snapshot in\n%s\n", ls.out.c_str());
  std::exit(1);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A pool for containerd's devmapper snapshotter as its documentation makes
// one: sparse files, loop devices, `dmsetup create` with a thin-pool table
// (64 KiB blocks, low water mark 32768 blocks). Torn down (every device of
// the pool, the pool, the loops) when it goes.
class DmsetupPool {
 public:
  DmsetupPool(const std::string& dir, const std::string& name, uint64_t data_bytes) : name_(name) {
    std::string data = dir + "/data", meta = dir + "/metadata";
    Must(testsupport::Run({"truncate", "-s", std::to_string(data_bytes), data}));
    Must(testsupport::Run({"truncate", "-s", std::to_string(256ull << 20), meta}));
    for (const std::string& f : {data, meta}) {
      RunResult l = testsupport::Run({"losetup", "--find", "--show", f});
      Must(l);
      loops_.push_back(Trim(l.out));
    }
    auto majmin = [](const std::string& dev) {
      struct stat st;
      if (::stat(dev.c_str(), &st) != 0) {
        std::fprintf(stderr, "snapshotter_bench: stat %s failed\n", dev.c_str());
        std::exit(1);
      }
      return std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
    };
    std::string table = "0 " + std::to_string(data_bytes / 512) + " thin-pool " + majmin(loops_[1]) + " " +
                        majmin(loops_[0]) + " 128 32768";
    Must(Dmsetup({"create", name_, "--table", table}));
  }
  ~DmsetupPool() {
    RunResult ls = Dmsetup({"ls"});
    std::istringstream lines(ls.out);
    for (std::string line; std::getline(lines, line);) {
      std::string dev = line.substr(0, line.find('\t'));
      if (dev.rfind(name_ + "-", 0) == 0) Dmsetup({"remove", "--retry", dev});
    }
    Dmsetup({"remove", "--retry", name_});
    for (const std::string& l : loops_) testsupport::Run({"losetup", "-d", l});
  }
  static RunResult Dmsetup(std::vector<std::string> args) {
    args.insert(args.begin(), {"env", "DM_DISABLE_UDEV=1", "dmsetup"});
    return testsupport::Run(args);
  }

 private:
  std::string name_;
  std::vector<std::string> loops_;
};

void Must(const grpc::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "snapshotter_bench: %s: %s\n", what, s.error_message().c_str());
    std::exit(1);
  }
}

// containerd's Snapshots service on its API socket, in ctr's namespace.
class Snapshots {
 public:
  explicit Snapshots(const std::string& address)
      : channel_(grpc::CreateChannel("unix:" + address, grpc::InsecureChannelCredentials())),
        stub_(snapshots::Snapshots::NewStub(channel_)) {
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(120))) {
      std::fprintf(stderr, "snapshotter_bench: no gRPC connection to %s\n", address.c_str());
      std::exit(1);
    }
  }
  void Prepare(const std::string& snapshotter, const std::string& key, const std::string& parent) {
    snapshots::PrepareSnapshotRequest req;
    req.set_snapshotter(snapshotter);
    req.set_key(key);
    req.set_parent(parent);
    // A root for containerd's GC (a collection after the previous round's
    // removals must not take it).
    (*req.mutable_labels())["containerd.io/gc.root"] = "snapshotter_bench";
    snapshots::PrepareSnapshotResponse resp;
    auto ctx = Context();
    Must(stub_->Prepare(ctx.get(), req, &resp), "Prepare");
  }
  std::vector<containerd::types::Mount> Mounts(const std::string& snapshotter, const std::string& key) {
    snapshots::MountsRequest req;
    req.set_snapshotter(snapshotter);
    req.set_key(key);
    snapshots::MountsResponse resp;
    auto ctx = Context();
    Must(stub_->Mounts(ctx.get(), req, &resp), "Mounts");
    return {resp.mounts().begin(), resp.mounts().end()};
  }
  void Remove(const std::string& snapshotter, const std::string& key) {
    snapshots::RemoveSnapshotRequest req;
    req.set_snapshotter(snapshotter);
    req.set_key(key);
    google::protobuf::Empty resp;
    auto ctx = Context();
    Must(stub_->Remove(ctx.get(), req, &resp), "Remove");
  }

 private:
  static std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("containerd-namespace", "default");
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    return ctx;
  }
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<snapshots::Snapshots::Stub> stub_;
};

// mount(8) of what Snapshots.Mounts answered (one mount: every snapshotter
// here answers one).
void MountSnapshot(Snapshots& api, const std::string& snapshotter, const std::string& key, const std::string& target) {
  std::vector<containerd::types::Mount> mounts = api.Mounts(snapshotter, key);
  if (mounts.size() != 1) {
    std::fprintf(stderr, "snapshotter_bench: %s answered %zu mounts for %s\n", snapshotter.c_str(), mounts.size(),
                 key.c_str());
    std::exit(1);
  }
  const containerd::types::Mount& m = mounts[0];
  std::vector<std::string> argv = {"mount", "-t", m.type(), m.source(), target};
  if (m.options_size() > 0) {
    argv.push_back("-o");
    argv.push_back(absl::StrJoin(m.options(), ","));
  }
  Must(testsupport::Run(argv));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  std::string driver = "overlay", data_dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--driver" && i + 1 < argc) {
      driver = argv[++i];
    } else if (a == "--data" && i + 1 < argc) {
      data_dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: snapshotter_bench [--runs N] [--driver overlay|devicemapper] [--data DIR]\n");
      return 2;
    }
  }
  const bool dm = driver == "devicemapper";
  if (!dm && driver != "overlay") {
    std::fprintf(stderr, "snapshotter_bench: --driver overlay or devicemapper\n");
    return 2;
  }
  if (::geteuid() != 0) {
    std::printf("snapshotter_bench: skipped (needs root: containerd)\n");
    return 0;
  }
  std::string missing = testsupport::TestContainerd::Missing();
  for (const char* tool : {"umoci", "dmsetup", "mkfs.ext4", "losetup"}) {
    if (!dm && std::string(tool) == "dmsetup") break;
    if (missing.empty() && !testsupport::HaveProgram(tool)) missing = std::string("no ") + tool;
  }
  if (dm && missing.empty() && ::access("/dev/mapper/control", F_OK) != 0) {
    missing = "no device-mapper: run it inside tests/vm/run";
  }
  if (!missing.empty()) {
    std::printf("snapshotter_bench: skipped (%s)\n", missing.c_str());
    return 0;
  }
  // The guest's /tmp (tmpfs) refuses the image's user.* xattr: there, the
  // scratch dir (image, stores, both pools' files) goes on an ext4.
  std::unique_ptr<testsupport::UserXattrTmpdir> xattr_tmp;
  if (dm) xattr_tmp = std::make_unique<testsupport::UserXattrTmpdir>();
  testsupport::ScratchDir dir("snapshotter-bench");
  std::string image = testsupport::MakeTestImage(dir.path(), kImage);
  std::string sock = dir.Sub("snapshotter.sock");
  std::vector<std::string> sargv = {testsupport::BuiltTool("dmthin-snapshotter"), "--root", dir.Sub("store"),
                                    "--address", sock, "--driver", driver};
  std::string builtin = "overlayfs", extra_config;
  std::vector<std::string> env;
  std::unique_ptr<DmsetupPool> dmsetup_pool;
  if (dm) {
    for (const char* opt : {"dm.loopdatasize=8G", "dm.basesize=1G"}) {
      sargv.push_back("--storage-opt");
      sargv.push_back(opt);
    }
    builtin = "devmapper";
    std::string pool = testsupport::UniqueName("ctrd-pool");
    std::filesystem::create_directories(dir.Sub("dmsetup-pool"));
    dmsetup_pool = std::make_unique<DmsetupPool>(dir.Sub("dmsetup-pool"), pool, 8ull << 30);
    extra_config = "[plugins.\"io.containerd.snapshotter.v1.devmapper\"]\n"
                   "  root_path = \"" + dir.Sub("devmapper") + "\"\n"
                   "  pool_name = \"" + pool + "\"\n"
                   "  base_image_size = \"1GB\"\n"
                   "  async_remove = false\n";
    env.push_back("DM_DISABLE_UDEV=1");
  }
  auto s = testsupport::Daemon::Start(sargv, dir.Sub("snapshotter.log"));
  Must(s.status());
  std::unique_ptr<testsupport::Daemon> snapshotter = std::move(*s);
  // Until it listens or exits (it fails fast then): opening a devicemapper
  // store (its pool, base device and ext4) took over a minute in the vm
  // tier's starved guest.
  Must(snapshotter->WaitForListening(sock, absl::Minutes(5)));
  auto c = testsupport::TestContainerd::Start(dir.path(), "dmthin", sock, extra_config, env);
  Must(c.status());
  std::unique_ptr<testsupport::TestContainerd> containerd = std::move(*c);

  const std::vector<std::string> names = {"dmthin", builtin};
  std::map<std::string, double> import_ms;
  std::map<std::string, std::string> top;
  for (const std::string& n : names) {
    std::fprintf(stderr, "snapshotter_bench: importing into %s\n", n.c_str());
    double t = NowMs();
    Must(containerd->Ctr({"images", "import", "--snapshotter", n, image}));
    import_ms[n] = NowMs() - t;
    top[n] = TopSnapshot(*containerd, n);
  }
  std::map<std::string, std::string> target;
  for (const std::string& n : names) {
    target[n] = dir.Sub("mnt-" + n);
    std::filesystem::create_directories(target[n]);
  }
  // Step by step, taking turns, the order flipping every round: a load
  // change on the shared machine (which TCG magnifies) hits both alike.
  Snapshots api(containerd->address());
  std::map<std::string, std::vector<double>> prepare, mount, remove, run;
  for (int i = 0; i < runs; ++i) {
    std::vector<std::string> order = names;
    if (i % 2 == 1) std::reverse(order.begin(), order.end());
    std::map<std::string, std::string> key;
    for (const std::string& n : order) key[n] = testsupport::UniqueName("bench-" + n);
    for (const std::string& n : order) {
      double t = NowMs();
      api.Prepare(n, key[n], top[n]);
      prepare[n].push_back(NowMs() - t);
    }
    for (const std::string& n : order) {
      double t = NowMs();
      MountSnapshot(api, n, key[n], target[n]);
      mount[n].push_back(NowMs() - t);
      Must(testsupport::Run({"umount", target[n]}));
    }
    for (const std::string& n : order) {
      double t = NowMs();
      api.Remove(n, key[n]);
      remove[n].push_back(NowMs() - t);
    }
    for (const std::string& n : order) {
      double t = NowMs();
      Must(containerd->Ctr({"run", "--rm", "--snapshotter", n, kImage, key[n], "/bin/true"}));
      run[n].push_back(NowMs() - t);
    }
    std::fprintf(stderr, "snapshotter_bench: round %d/%d: prepare %s %.0f ms, %s %.0f ms\n", i + 1, runs,
                 names[0].c_str(), prepare[names[0]].back(), names[1].c_str(), prepare[names[1]].back());
  }
  auto label = [&](const std::string& n) {
    return n == "dmthin" ? "dmthin-snapshotter (proxy, " + driver + ")" : builtin + " (built in)";
  };
  std::printf("| snapshotter | import (ms) | prepare, median (ms) | mount, median (ms) | remove, median (ms) | "
              "run --rm true, median (ms) |\n|---|---:|---:|---:|---:|---:|\n");
  for (const std::string& n : names) {
    std::printf("| %s | %.0f | %.1f | %.1f | %.1f | %.1f |\n", label(n).c_str(), import_ms[n], Median(prepare[n]),
                Median(mount[n]), Median(remove[n]), Median(run[n]));
  }
  const std::string& b = builtin;
  std::printf("| proxy / built-in | %.2f | %.2f | %.2f | %.2f | %.2f |\n", import_ms["dmthin"] / import_ms[b],
              Median(prepare["dmthin"]) / Median(prepare[b]), Median(mount["dmthin"]) / Median(mount[b]),
              Median(remove["dmthin"]) / Median(remove[b]), Median(run["dmthin"]) / Median(run[b]));
  if (dm) {
    std::printf("| built-in / proxy (speed-up) | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
                import_ms[b] / import_ms["dmthin"], Median(prepare[b]) / Median(prepare["dmthin"]),
                Median(mount[b]) / Median(mount["dmthin"]), Median(remove[b]) / Median(remove["dmthin"]),
                Median(run[b]) / Median(run["dmthin"]));
  }
  std::printf("(%d rounds, turns at every step, order flipping each round; prepare, mount, remove through containerd's API; run includes ctr's start)\n", runs);
  if (!data_dir.empty()) {
    std::filesystem::create_directories(data_dir);
    std::string path = data_dir + "/snapshotter-" + driver + ".dat";
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "snapshotter_bench: cannot write %s\n", path.c_str());
    } else {
      std::fprintf(f, "op \"%s\" \"%s\"\n", label("dmthin").c_str(), label(b).c_str());
      auto row = [&](const char* op, std::map<std::string, std::vector<double>>& v) {
        std::fprintf(f, "%s %.1f %.1f\n", op, Median(v["dmthin"]), Median(v[b]));
      };
      row("prepare", prepare);
      row("mount", mount);
      row("remove", remove);
      row("run", run);
      std::fclose(f);
    }
  }
  containerd->Stop().IgnoreError();
  snapshotter->Stop(SIGTERM).IgnoreError();
  if (dm) (void)testsupport::DestroyDriverPools(dir.Sub("store/devicemapper"));
  return 0;
}
