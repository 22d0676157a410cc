// Benchmark: fio into a dmthin volume against fio into a container's own
// layer and into a plain bind-mounted directory, side by side in one run,
// with every row's ratio to the bind mount (the point of volumes, article
// 000: write-heavy work belongs in a volume, away from copy-on-write).
//
//   build/bench/volume_fio_bench [--size SIZE] [--runtime S] [--image-file SIZE] [--rounds N]
//                                 [--data DIR]
//       host: bind mount, directory volume, overlay layer.
//   tests/vm/run --mem 4096 -- build/bench/volume_fio_bench [...]
//       in the vm guest also: thin volume, devicemapper layer; the directory
//       volume gets a size there (ext4 project quota).
//
// Every row lives on one scratch ext4 (a sparse file on /tmp, loop, 16 GiB;
// in the guest with quota,project and mounted prjquota), as
// /var/lib/docker would: the bind-mounted directory, the volume store (its
// directory volumes, and the thin pool's sparse files), overlay's upper
// dirs and devicemapper's loop pool. Rows, in order:
//   bind mount          a directory on the ext4, bind-mounted elsewhere
//   volume, directory   libvolume's directory backend (project quota in the VM)
//   volume, thin        libvolume's thin backend: its own thin device + ext4
//   layer, overlay      a container (rw) layer of libgraph's overlay driver
//   layer, devicemapper a container layer of libgraph's devicemapper driver
// fio runs in this process's namespace against the directory a container
// would see (the layer's mount, the volume's mountpoint): a container's
// namespaces add no cost to I/O, the storage under the path is what is
// measured.
//
// Jobs (psync, iodepth 1, O_DIRECT where the filesystem takes it, end_fsync):
//   seq-write   1 MiB blocks, SIZE (default 256M), a new file
//   seq-read    1 MiB blocks, that file, its cache invalidated first
//   rand-write  4 KiB blocks, a new file of SIZE, for S seconds (default 10)
//   image-rewrite 4 KiB random writes over all of a file that came with the
//               image (--image-file, default 64M): in a layer it lives in the
//               image's layer below (overlay copies it up whole at open;
//               devicemapper breaks the sharing of each pool block), in a
//               volume or bind mount it was copied in before (as Docker's
//               copy-up into a new volume does). MiB/s from the whole fio
//               run's wall time, open (and copy-up) included.
// All targets are set up first; then ROUNDS rounds (default 3), each
// running every job on every target in turn (the order of the targets
// rotating), so a busy host slows all alike; the tables give the median.
//
// (root) Prints markdown tables (MiB/s, and ratios to the bind mount); with
// --data DIR writes DIR/volume_fio.dat and volume_fio_ratio.dat for gnuplot
// (tests/bench/volume_fio_bench.gp).
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "graph/driver.h"
#include "graph/stream.h"
#include "libdm/control.h"
#include "tests/support/fio.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"
#include "volume/store.h"

namespace {

using testsupport::FioResult;
using testsupport::FioSpec;

constexpr uint64_t kMiB = 1 << 20;

struct Job {
  const char* name;
  const char* rw;
  const char* bs;
};
constexpr Job kJobs[] = {{"seq-write", "write", "1M"},
                         {"seq-read", "read", "1M"},
                         {"rand-write", "randwrite", "4k"},
                         {"image-rewrite", "randwrite", "4k"}};
constexpr size_t kNumJobs = sizeof(kJobs) / sizeof(kJobs[0]);

void Die(const absl::Status& s, const std::string& what) {
  std::fprintf(stderr, "volume_fio_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

std::string ImageName(int round) { return absl::StrCat("image", round, ".dat"); }

// The image's files, one per round: `bytes` of a non-zero pattern each.
std::vector<testsupport::TarEntry> ImageFiles(uint64_t bytes, int rounds) {
  std::string data(bytes, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + (i / 4096) % 26);
  std::vector<testsupport::TarEntry> files;
  for (int r = 0; r < rounds; ++r) files.push_back({.path = ImageName(r), .data = data});
  return files;
}

// What a volume or bind mount gets: the image's files copied in, synced.
absl::Status CopyImageFiles(const std::string& dir, const std::vector<testsupport::TarEntry>& files) {
  for (const auto& f : files) testsupport::WriteFileOrDie(dir + "/" + f.path, f.data);
  testsupport::RunResult sync = testsupport::Run({"sync", "-f", dir});
  return sync.ok() ? absl::OkStatus() : absl::InternalError(sync.Describe());
}

// One row of the table: where fio writes, and how to take it down.
struct Target {
  std::string name;
  std::string dir{};
  std::string note{};
  std::function<void()> close{};
  std::vector<std::vector<double>> mib_s = std::vector<std::vector<double>>(kNumJobs);
  std::string error{};
};

// A graph driver's container layer on an image layer holding the files.
absl::Status OpenLayer(Target& t, const std::string& driver, const std::string& root,
                       const std::map<std::string, std::string>& options,
                       const std::vector<testsupport::TarEntry>& files) {
  ::mkdir(root.c_str(), 0700);
  auto opened = graph::OpenDriver(driver, root, options);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<graph::Driver> d = std::move(*opened);
  t.close = [d] {
    (void)d->Put("ctr");
    (void)d->Remove("ctr");
    (void)d->Remove("img");
    (void)d->Cleanup();
  };
  absl::Status s = d->Create("img", "", {});
  if (!s.ok()) return s;
  std::string tar = testsupport::BuildTar(files);
  graph::StringSource src(tar);
  auto applied = d->ApplyDiff("img", "", src);
  if (!applied.ok()) return applied.status();
  graph::CreateOptions rw;
  rw.read_write = true;
  s = d->Create("ctr", "img", rw);
  if (!s.ok()) return s;
  auto dir = d->Get("ctr", "");
  if (!dir.ok()) return dir.status();
  t.dir = *dir;
  return absl::OkStatus();
}

uint64_t ParseFioSize(const std::string& size) {
  char unit = size.empty() ? 'M' : size.back();
  uint64_t n = std::strtoull(size.c_str(), nullptr, 10);
  return unit == 'G' || unit == 'g' ? n << 30 : unit == 'K' || unit == 'k' ? n << 10 : n << 20;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string size = "256M", image_size = "64M", data_dir;
  int runtime = 10, rounds = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--size") size = next();
    else if (a == "--runtime") runtime = std::max(1, std::atoi(next().c_str()));
    else if (a == "--image-file") image_size = next();
    else if (a == "--rounds") rounds = std::max(1, std::atoi(next().c_str()));
    else if (a == "--data") data_dir = next();
    else {
      std::fprintf(stderr,
                   "usage: volume_fio_bench [--size SIZE] [--runtime S] [--image-file SIZE] [--rounds N] "
                   "[--data DIR]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::printf("volume_fio_bench: skipped (needs root: loop devices, mounts)\n");
    return 0;
  }
  if (!testsupport::HaveProgram("fio")) {
    std::printf("volume_fio_bench: skipped (no fio: make deps)\n");
    return 0;
  }
  const bool dm = ::access("/dev/mapper/control", F_OK) == 0;
  const bool in_vm = ::getenv("DMTHIN_IN_VM") != nullptr;
  // The guest's kernel has ext4 project quota (QFMT_V2); the development
  // machines' kernel cannot mount an ext4 with the quota feature.
  std::vector<std::string> mkfs = {"mkfs.ext4", "-q"};
  if (in_vm) mkfs.insert(mkfs.end(), {"-O", "quota,project"});
  auto fs = graph::testing::ScratchBtrfs::CreateOf("ext4", mkfs, in_vm ? "prjquota,discard" : "discard", 16384);
  if (!fs.ok()) Die(fs.status(), "making the scratch ext4");
  const std::string base = (*fs)->path();
  const uint64_t image_bytes = ParseFioSize(image_size);
  const std::vector<testsupport::TarEntry> files = ImageFiles(image_bytes, rounds);

  std::vector<Target> targets;
  auto open = [&](Target t, const std::function<absl::Status(Target&)>& how) {
    absl::Status s = how(t);
    if (!s.ok()) {
      t.error = s.ToString();
      std::fprintf(stderr, "volume_fio_bench: %s: %s\n", t.name.c_str(), t.error.c_str());
    }
    targets.push_back(std::move(t));
  };

  open({.name = "bind mount (plain directory)"}, [&](Target& t) {
    std::string src = base + "/bind-src", dst = base + "/bind-dst";
    ::mkdir(src.c_str(), 0755);
    ::mkdir(dst.c_str(), 0755);
    if (::mount(src.c_str(), dst.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return absl::InternalError(absl::StrCat("bind mount: ", std::strerror(errno)));
    }
    t.close = [dst] { ::umount2(dst.c_str(), MNT_DETACH); };
    t.dir = dst;
    return CopyImageFiles(dst, files);
  });

  // One volume store for both backends; the thin pool's sparse files on the
  // scratch ext4 too (as devicemapper's loop pool).
  std::unique_ptr<dm::Control> control;
  std::unique_ptr<thinpool::StateDir> state;
  const std::string pool_name = absl::StrCat("vfb", ::getpid());
  volume::StoreOptions so;
  so.root = base + "/volumes";
  if (dm) {
    auto c = dm::Control::Open();
    if (!c.ok()) Die(c.status(), "opening /dev/mapper/control");
    control = std::move(*c);
    auto st = thinpool::StateDir::Open(base + "/thin");
    if (!st.ok()) Die(st.status(), "thinpool state dir");
    state = std::move(*st);
    thinpool::PoolOptions po;
    po.data_bytes = 8ull << 30;
    auto pool = thinpool::Pool::Create(*state, *control, pool_name, po);
    if (!pool.ok()) Die(pool.status(), "making the volumes' thin pool");
    so.thin_state_dir = base + "/thin";
    so.pool = pool_name;
  }
  auto opened_store = volume::VolumeStore::Open(so);
  if (!opened_store.ok()) Die(opened_store.status(), "opening the volume store");
  std::shared_ptr<volume::VolumeStore> store = std::move(*opened_store);
  auto open_volume = [&](const std::string& name, volume::Backend backend) {
    return [&, name, backend](Target& t) {
      volume::CreateOptions co;
      co.backend = backend;
      co.size_bytes = 4ull << 30;
      auto made = store->Create(name, co);
      if (!made.ok() && backend == volume::Backend::kDirectory) {
        // Nothing here enforces a size (the host's ext4 has no project quota).
        co.size_bytes = 0;
        t.note = "no size: no project quota on this kernel";
        made = store->Create(name, co);
      }
      if (!made.ok()) return made.status();
      t.close = [store, name] {
        (void)store->Unmount(name, "bench");
        (void)store->Remove(name, /*force=*/true);
      };
      auto path = store->Mount(name, "bench");
      if (!path.ok()) return path.status();
      t.dir = *path;
      return CopyImageFiles(t.dir, files);
    };
  };
  open({.name = "volume, directory backend"}, open_volume("vdir", volume::Backend::kDirectory));
  if (dm) open({.name = "volume, thin backend (ext4)"}, open_volume("vthin", volume::Backend::kThin));
  open({.name = "container layer, overlay"}, [&](Target& t) {
    return OpenLayer(t, "overlay", base + "/graph", {{"overlay.mount_api", "legacy"}}, files);
  });
  if (dm) {
    open({.name = "container layer, devicemapper"}, [&](Target& t) {
      return OpenLayer(t, "devicemapper", base + "/graph",
                       {{"dm.loopdatasize", "8G"}, {"dm.basesize", "4G"}, {"dm.reaper_interval", "0"}}, files);
    });
  }

  // Rounds: every job on every target, the targets' order rotating.
  for (int r = 0; r < rounds; ++r) {
    for (size_t j = 0; j < kNumJobs; ++j) {
      for (size_t k = 0; k < targets.size(); ++k) {
        Target& t = targets[(k + static_cast<size_t>(r)) % targets.size()];
        if (!t.error.empty()) continue;
        const Job& job = kJobs[j];
        FioSpec spec;
        spec.dir = t.dir;
        spec.rw = job.rw;
        spec.bs = job.bs;
        spec.size = size;
        if (j == 0 || j == 1) spec.file = "seq.dat";
        if (j == 2) {
          spec.file = "rand.dat";
          spec.runtime_s = runtime;
        }
        if (j == 3) {
          spec.file = ImageName(r);
          spec.size = image_size;
        }
        auto res = testsupport::RunFio(spec);
        if (!res.ok()) {
          t.error = res.status().ToString();
          std::fprintf(stderr, "volume_fio_bench: %s: %s\n", t.name.c_str(), t.error.c_str());
          continue;
        }
        // image-rewrite: the whole run's time, open (overlay's copy-up) included.
        double mib_s = j == 3 ? static_cast<double>(image_bytes) / kMiB / res->wall_s : res->mib_s;
        t.mib_s[j].push_back(mib_s);
        if (!res->direct && t.note.find("buffered") == std::string::npos) {
          t.note += absl::StrCat(t.note.empty() ? "" : "; ", "buffered (no O_DIRECT)");
        }
        std::fprintf(stderr, "volume_fio_bench: round %d %s %s: %.1f MiB/s\n", r + 1, job.name, t.name.c_str(),
                     mib_s);
      }
    }
    for (Target& t : targets) {
      if (!t.dir.empty()) {
        ::unlink((t.dir + "/seq.dat").c_str());
        ::unlink((t.dir + "/rand.dat").c_str());
      }
    }
  }
  for (auto it = targets.rbegin(); it != targets.rend(); ++it) {
    if (it->close) it->close();
  }
  store.reset();
  if (dm) {
    auto pool = thinpool::Pool::Open(*state, *control, pool_name);
    if (pool.ok()) (void)(*pool)->Destroy(/*force=*/true);
  }

  std::printf("\n### fio, MiB/s, median of %d rounds (seq %s in 1 MiB blocks; rand-write 4 KiB for %d s; "
              "image-rewrite 4 KiB over a %s file of the image)\n\n",
              rounds, size.c_str(), runtime, image_size.c_str());
  std::printf("| storage |");
  for (const Job& j : kJobs) std::printf(" %s |", j.name);
  std::printf(" note |\n|---|");
  for (size_t i = 0; i < kNumJobs; ++i) std::printf("---:|");
  std::printf("---|\n");
  for (const Target& t : targets) {
    std::printf("| %s |", t.name.c_str());
    for (size_t i = 0; i < kNumJobs; ++i) std::printf(" %.1f |", Median(t.mib_s[i]));
    std::printf(" %s |\n", t.error.empty() ? t.note.c_str() : ("failed: " + t.error).c_str());
  }
  const Target& bind = targets[0];
  std::printf("\n### Ratio to the bind mount (> 1: faster than the bind mount)\n\n| storage |");
  for (const Job& j : kJobs) std::printf(" %s |", j.name);
  std::printf("\n|---|");
  for (size_t i = 0; i < kNumJobs; ++i) std::printf("---:|");
  std::printf("\n");
  for (const Target& t : targets) {
    std::printf("| %s |", t.name.c_str());
    for (size_t i = 0; i < kNumJobs; ++i) {
      double b = Median(bind.mib_s[i]);
      if (b > 0 && !t.mib_s[i].empty()) {
        std::printf(" %.2f |", Median(t.mib_s[i]) / b);
      } else {
        std::printf(" - |");
      }
    }
    std::printf("\n");
  }
  if (!data_dir.empty()) {
    // One row per job, one column per storage (MiB/s; ratio to the bind mount).
    std::ofstream mib(data_dir + "/volume_fio.dat"), ratio(data_dir + "/volume_fio_ratio.dat");
    for (std::ofstream* out : {&mib, &ratio}) {
      *out << "job";
      for (const Target& t : targets) *out << " \"" << t.name << "\"";
      *out << "\n";
    }
    for (size_t i = 0; i < kNumJobs; ++i) {
      mib << kJobs[i].name;
      ratio << kJobs[i].name;
      double b = Median(bind.mib_s[i]);
      for (const Target& t : targets) {
        mib << " " << Median(t.mib_s[i]);
        ratio << " " << (b > 0 ? Median(t.mib_s[i]) / b : 0.0);
      }
      mib << "\n";
      ratio << "\n";
    }
  }
  bool failed = false;
  for (const Target& t : targets) failed |= !t.error.empty();
  return failed ? 1 : 0;
}
