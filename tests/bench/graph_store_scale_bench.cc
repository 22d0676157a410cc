// Benchmark: a layer store at scale (issue 17). Imports chains of small
// layers (default 40 chains × 125 deep = 5,000 layers) into one store and,
// when the store reaches each of 10, 100, 1,000 and 5,000 layers, measures:
// the import latency at that size, `graphctl ls` and `graphctl check` as
// fresh processes (store open included; wall time and peak RSS from wait4),
// and List in-process. Host tier (overlay, or --driver NAME).
//
// With --driver devicemapper (vm tier: `tests/vm/run -- build/bench/...`)
// each row also has the pool's side, as fresh processes: `dmthin pool check`
// (registry against the kernel's metadata; wall time, peak RSS) and
// `dmthin thin list`'s peak RSS; and the bench's own cross-check: the
// registry's thin ids against those thin_dump reads from a metadata
// snapshot of the live pool (the two sets must be equal), with the pool's
// data and metadata use.
//
// --via prepare makes each layer by containerd's Prepare + Commit
// (LayerStore::Create of an active layer on the chain's top, then Commit)
// instead of importing a tar: no filesystem is mounted or written, so a
// devicemapper layer is its thin snapshot, its activation and its records
// (the vm tier under TCG takes ~1-2 s a layer for an import's mount, write
// and umount).
//
//   build/bench/graph_store_scale_bench [--chains N] [--depth D] [--dir SCRATCH]
//                                       [--driver overlay] [--storage-opt K=V ...]
//                                       [--via import|prepare] [--keep]
//
// --keep leaves the store in place (its root is printed) for profiling.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "graph/store.h"
#include "graph/stream.h"
#include "libdm/control.h"
#include "libdm/thin.h"
#include "thinpool/exec.h"
#include "thinpool/loop_device.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"
#include "tests/bench/bench_child.h"
#include "tests/support/graph_tar.h"

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Child {
  int rc = -1;
  bench_child_usage u{};
};

Child RunChild(std::vector<std::string> argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  Child c;
  c.rc = bench_run_child_usage(args.data(), &c.u);
  return c;
}

// The devicemapper driver's own pool under the store root: the driver's
// directory holds `instance` (its tag) and `thinpool/` (the state dir); the
// pool is "graph<tag>". With dm.thinpooldev, the options name both.
struct PoolRef {
  std::string state_dir, name;
};

std::optional<PoolRef> FindPool(const std::string& root, const std::map<std::string, std::string>& opts) {
  if (auto p = opts.find("dm.thinpooldev"); p != opts.end()) {
    auto s = opts.find("dm.statedir");
    return PoolRef{s != opts.end() ? s->second : thinpool::kDefaultStateDir, p->second};
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    std::FILE* f = std::fopen((e.path() / "instance").c_str(), "r");
    if (f == nullptr) continue;
    char tag[32] = {};
    bool got = std::fgets(tag, sizeof tag, f) != nullptr;
    std::fclose(f);
    if (!got || !std::filesystem::exists(e.path() / "thinpool")) continue;
    std::string t(tag);
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    return PoolRef{(e.path() / "thinpool").string(), "graph" + t};
  }
  return std::nullopt;
}

// Device ids in thin_dump's XML: <device dev_id="N" ...>.
std::set<uint32_t> DumpedIds(const std::string& xml) {
  std::set<uint32_t> ids;
  static constexpr char kTag[] = "<device dev_id=\"";
  for (size_t pos = xml.find(kTag); pos != std::string::npos; pos = xml.find(kTag, pos)) {
    pos += sizeof(kTag) - 1;
    ids.insert(static_cast<uint32_t>(std::strtoul(xml.c_str() + pos, nullptr, 10)));
  }
  return ids;
}

struct PoolSide {
  std::string ids;  // "N = N" or what differs
  double data_mib = 0, metadata_mib = 0;
};

// The registry's thin ids against thin_dump's of a metadata snapshot of the
// live pool (reserved and released by the bench itself through libdm, so
// neither side is dmthin's own check).
absl::StatusOr<PoolSide> CompareIds(const PoolRef& ref) {
  auto state = thinpool::StateDir::Open(ref.state_dir);
  if (!state.ok()) return state.status();
  auto dm = dm::Control::Open();
  if (!dm.ok()) return dm.status();
  auto pool = thinpool::Pool::Open(**state, **dm, ref.name);
  if (!pool.ok()) return pool.status();
  auto lock = (*state)->LockPool(ref.name);
  if (!lock.ok()) return lock.status();
  auto st = (*pool)->Status();
  if (!st.ok()) return st.status();
  auto rec = (*pool)->Record();
  if (!rec.ok()) return rec.status();
  std::string meta = rec->metadata_path;
  if (rec->backing == thinpool::PoolBacking::kFiles) {
    auto loop = thinpool::LoopDevice::FindByBackingFile(meta);
    if (!loop.ok()) return loop.status();
    if (loop->has_value()) meta = (*loop)->path();
  }
  auto thins = (*state)->registry().ListThins(ref.name);
  if (!thins.ok()) return thins.status();
  std::set<uint32_t> registered;
  for (const auto& t : *thins) registered.insert(t.dev_id);
  auto name = dm::Name::Create((*pool)->dm_name());
  if (!name.ok()) return name.status();
  absl::Status reserved = (*dm)->SendThinPoolMessage(*name, dm::thin_msg::ReserveMetadataSnap{});
  if (!reserved.ok()) return reserved;
  const std::optional<std::string> thin_dump = thinpool::FindProgram("thin_dump");
  if (!thin_dump) return absl::NotFoundError("thin_dump is not installed (thin-provisioning-tools)");
  auto dumped = thinpool::RunProgram({*thin_dump, "--skip-mappings", "--metadata-snap", meta}, size_t{256} << 20);
  absl::Status released = (*dm)->SendThinPoolMessage(*name, dm::thin_msg::ReleaseMetadataSnap{});
  if (!dumped.ok()) return dumped.status();
  if (!released.ok()) return released;
  if (dumped->exit_code != 0 || dumped->truncated) {
    return absl::InternalError(absl::StrCat("thin_dump exited ", dumped->exit_code, ": ",
                                            dumped->output.substr(0, 200)));
  }
  std::set<uint32_t> kernel = DumpedIds(dumped->output);
  PoolSide side;
  if (kernel == registered) {
    side.ids = absl::StrCat(registered.size(), " = ", kernel.size());
  } else {
    size_t only_reg = 0, only_kernel = 0;
    for (uint32_t id : registered) only_reg += kernel.count(id) == 0;
    for (uint32_t id : kernel) only_kernel += registered.count(id) == 0;
    side.ids = absl::StrCat("DIFFER: ", registered.size(), " vs ", kernel.size(), " (", only_reg,
                            " only in the registry, ", only_kernel, " only in thin_dump)");
  }
  side.data_mib = static_cast<double>(st->data_used_bytes) / (1 << 20);
  side.metadata_mib = static_cast<double>(st->metadata_used_bytes) / (1 << 20);
  return side;
}

}  // namespace

int main(int argc, char** argv) {
  int chains = 40, depth = 125;
  std::string scratch = "/tmp", driver = "overlay";
  std::map<std::string, std::string> opts;
  bool keep = false;
  bool via_prepare = false;
  std::string graphctl = std::string(argv[0]);
  graphctl = graphctl.substr(0, graphctl.rfind('/') == std::string::npos ? 0 : graphctl.rfind('/'));
  graphctl = (graphctl.empty() ? std::string(".") : graphctl) + "/../bin/";
  const std::string dmthin = graphctl + "dmthin";
  graphctl += "graphctl";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "graph_store_scale_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--chains") chains = std::atoi(next().c_str());
    else if (a == "--depth") depth = std::atoi(next().c_str());
    else if (a == "--dir") scratch = next();
    else if (a == "--driver") driver = next();
    else if (a == "--keep") keep = true;
    else if (a == "--via") {
      std::string v = next();
      if (v != "import" && v != "prepare") {
        std::fprintf(stderr, "graph_store_scale_bench: --via import or prepare, not %s\n", v.c_str());
        return 2;
      }
      via_prepare = v == "prepare";
    }
    else if (a == "--storage-opt") {
      std::vector<std::string> kv = absl::StrSplit(next(), absl::MaxSplits('=', 1));
      if (kv.size() == 2) opts[kv[0]] = kv[1];
    } else {
      std::fprintf(stderr,
                   "usage: graph_store_scale_bench [--chains N] [--depth D] [--dir SCRATCH] "
                   "[--driver NAME] [--storage-opt K=V] [--via import|prepare] [--keep]\n");
      return 2;
    }
  }
  if (chains < 1 || depth < 1) return 2;
  if (::access(graphctl.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "graph_store_scale_bench: %s is not built\n", graphctl.c_str());
    return 1;
  }
  const std::string root = absl::StrCat(scratch, "/graph-store-scale-", ::getpid());
  const int total = chains * depth;
  std::vector<int> marks;
  for (int m : {10, 100, 1000, 5000, 10000}) {
    if (m < total) marks.push_back(m);
  }
  marks.push_back(total);

  const bool devmapper = driver == "devicemapper";
  if (devmapper && ::access(dmthin.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "graph_store_scale_bench: %s is not built\n", dmthin.c_str());
    return 1;
  }
  // Process start alone (dynamic linking of graphctl's libraries), which
  // every `graphctl ls` row includes: large under the vm tier's emulation.
  Child help = RunChild({graphctl, "--help"});
  std::vector<std::string> rows, pool_rows;
  int rc = 0;
  {
    auto store = graph::OpenLayerStore(root, driver, opts);
    if (!store.ok()) {
      std::fprintf(stderr, "opening the store: %s\n", store.status().ToString().c_str());
      return 1;
    }
    std::vector<std::string> chain_top(static_cast<size_t>(chains));
    std::vector<double> window;  // import ms since the last mark
    size_t mark = 0;
    auto t_all = Clock::now();
    int made = 0;
    // Breadth first: chain c's layer d after every chain's layer d-1, so the
    // store holds chains of every depth up to `depth` at the end.
    for (int d = 0; d < depth && rc == 0; ++d) {
      for (int c = 0; c < chains && rc == 0; ++c) {
        const std::string& parent = chain_top[static_cast<size_t>(c)];
        absl::StatusOr<graph::LayerInfo> layer;
        Clock::time_point t0;
        if (via_prepare) {
          const std::string name = absl::StrCat("c", c, "-d", d);
          t0 = Clock::now();
          layer = (*store)->Create(name + "-key", parent, graph::CreateLayerOptions{});
          if (layer.ok()) layer = (*store)->Commit(name, name + "-key");
        } else {
          std::string tar = testsupport::BuildTar(
              {{.path = absl::StrCat("c", c, "/"), .type = '5', .mode = 0755},
               {.path = absl::StrCat("c", c, "/d", d), .data = absl::StrCat("chain ", c, " depth ", d, "\n")}});
          graph::StringSource src(tar);
          graph::ImportOptions io;
          io.parent = parent;
          t0 = Clock::now();
          layer = (*store)->Import(src, io);
        }
        window.push_back(Ms(t0, Clock::now()));
        if (!layer.ok()) {
          std::fprintf(stderr, "import %d/%d: %s\n", c, d, layer.status().ToString().c_str());
          rc = 1;
          break;
        }
        chain_top[static_cast<size_t>(c)] = layer->name;
        ++made;
        if (mark < marks.size() && made == marks[mark]) {
          ++mark;
          // Store open + List in-process: a second LayerStore on the same root.
          auto o0 = Clock::now();
          double open_ms = 0, list_ms = 0;
          {
            auto again = graph::OpenLayerStore(root, driver, opts);
            auto l0 = Clock::now();
            open_ms = Ms(o0, l0);
            auto all = again.ok() ? (*again)->List() : again.status();
            list_ms = Ms(l0, Clock::now());
            if (!all.ok()) {
              std::fprintf(stderr, "open + List: %s\n", all.status().ToString().c_str());
              rc = 1;
              break;
            }
          }
          std::vector<std::string> base = {graphctl, "--root", root, "--driver", driver};
          for (const auto& [k, v] : opts) {
            base.push_back("--storage-opt");
            base.push_back(absl::StrCat(k, "=", v));
          }
          auto with = [&](const char* verb) {
            auto a = base;
            a.push_back(verb);
            return a;
          };
          Child ls = RunChild(with("ls"));
          Child check = RunChild(with("check"));
          if (ls.rc != 0 || check.rc != 0) {
            std::fprintf(stderr, "graphctl ls exited %d, check exited %d at %d layers\n", ls.rc, check.rc,
                         made);
            rc = 1;
          }
          struct rusage ru {};
          getrusage(RUSAGE_SELF, &ru);
          char row[512];
          std::snprintf(row, sizeof row,
                        "| %d | %.1f | %.1f + %.1f | %.0f / %.0f | %.1f | %.0f / %.0f | %.1f | %s | %.1f |",
                        made, Median(window), open_ms, list_ms, ls.u.wall_ms, ls.u.cpu_ms,
                        ls.u.max_rss_kib / 1024.0, check.u.wall_ms, check.u.cpu_ms,
                        check.u.max_rss_kib / 1024.0, check.rc == 0 ? "clean" : "PROBLEMS",
                        ru.ru_maxrss / 1024.0);
          rows.push_back(row);
          std::fprintf(stderr, "%s\n", row);
          if (devmapper) {
            std::optional<PoolRef> ref = FindPool(root, opts);
            if (!ref) {
              std::fprintf(stderr, "no devicemapper pool found under %s\n", root.c_str());
              rc = 1;
              break;
            }
            std::vector<std::string> dbase = {dmthin, "--state-dir", ref->state_dir};
            auto dwith = [&](std::vector<std::string> verb) {
              auto a = dbase;
              a.insert(a.end(), verb.begin(), verb.end());
              return a;
            };
            Child pcheck = RunChild(dwith({"pool", "check", ref->name}));
            Child tlist = RunChild(dwith({"thin", "list", ref->name}));
            auto side = CompareIds(*ref);
            if (pcheck.rc != 0 || tlist.rc != 0 || !side.ok() || side->ids.rfind("DIFFER", 0) == 0) {
              std::fprintf(stderr, "dmthin pool check exited %d, thin list %d, ids: %s\n", pcheck.rc, tlist.rc,
                           side.ok() ? side->ids.c_str() : side.status().ToString().c_str());
              rc = 1;
            }
            std::snprintf(row, sizeof row, "| %d | %.0f / %.0f | %.1f | %s | %.1f | %s | %.0f | %.1f |", made,
                          pcheck.u.wall_ms, pcheck.u.cpu_ms, pcheck.u.max_rss_kib / 1024.0,
                          pcheck.rc == 0 ? "clean" : "PROBLEMS", tlist.u.max_rss_kib / 1024.0,
                          side.ok() ? side->ids.c_str() : "ERROR", side.ok() ? side->data_mib : 0.0,
                          side.ok() ? side->metadata_mib : 0.0);
            pool_rows.push_back(row);
            std::fprintf(stderr, "%s\n", row);
          }
          window.clear();
        }
      }
    }
    std::printf("store: %s (%s), %d chains x %d deep = %d layers (%s), made in %.1f s\n\n", root.c_str(),
                driver.c_str(), chains, depth, made, via_prepare ? "Prepare + Commit" : "imported",
                Ms(t_all, Clock::now()) / 1000);
    std::printf("graphctl --help (process start, no store): %.0f ms wall / %.0f ms CPU, peak RSS %.1f MiB\n\n",
                help.u.wall_ms, help.u.cpu_ms, help.u.max_rss_kib / 1024.0);
    std::printf(
        "| layers | %s ms (median since previous row) | in-process: store open + List ms | "
        "graphctl ls ms wall / CPU | its peak RSS MiB | graphctl check ms wall / CPU | its peak RSS MiB | "
        "check | bench peak RSS MiB |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
        via_prepare ? "Prepare + Commit" : "import");
    for (const auto& r : rows) std::printf("%s\n", r.c_str());
    if (devmapper) {
      std::printf(
          "\n| layers | dmthin pool check ms wall / CPU | its peak RSS MiB | pool check | dmthin thin list "
          "peak RSS MiB | thin ids: registry = thin_dump | pool data used MiB | metadata used MiB |\n"
          "|---:|---:|---:|---|---:|---|---:|---:|\n");
      for (const auto& r : pool_rows) std::printf("%s\n", r.c_str());
    }
  }
  if (!keep) {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  return rc;
}
