// Benchmark: overlay mount (Get) and unmount (Put) time against stack depth,
// for both mount paths, plus create/get/put/remove per driver.
//
//   build/bench/graph_overlay_mount_bench [--runs N] [--dir SCRATCH]
//
// Builds one chain of 500 read-only layers (one small file each), then for
// each depth d mounts the image layer at depth d (d lowers) N times and
// reports the median. SCRATCH defaults to /tmp.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "graph/driver.h"
#include "graph/fsutil.h"
#include "graph/stream.h"

namespace {

double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A one-file tar: 512-byte header + 512 bytes data + 1024 end.
std::string OneFileTar(const std::string& name, const std::string& data) {
  std::string h(512, '\0');
  name.copy(&h[0], 100);
  std::snprintf(&h[100], 8, "%07o", 0644);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011o", static_cast<unsigned>(data.size()));
  std::snprintf(&h[136], 12, "%011o", 1700000000u);
  h[156] = '0';
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  std::string body = data;
  body.resize((data.size() + 511) / 512 * 512, '\0');
  return h + body + std::string(1024, '\0');
}

int Fail(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  std::string scratch = "/tmp";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) scratch = argv[++i];
  }
  const std::vector<int> depths = {1, 2, 10, 50, 100, 200, 300, 400, 500};
  std::printf("| depth (lowers) | new API Get ms | new API Put ms | mount(2) Get ms | mount(2) Put ms |\n");
  std::printf("|---|---|---|---|---|\n");
  std::vector<std::vector<double>> results(depths.size());
  for (const char* api : {"new", "legacy"}) {
    std::string base = absl::StrCat(scratch, "/overlay-bench-", getpid(), "-", api);
    auto d = graph::OpenDriver("overlay", base, {{"overlay.mount_api", api}});
    if (!d.ok()) return Fail(d.status(), "open overlay");
    graph::Driver& drv = **d;
    std::string parent;
    for (int i = 0; i < 500; ++i) {
      std::string id = absl::StrCat("l", i);
      absl::Status s = drv.Create(id, parent, {});
      if (!s.ok()) return Fail(s, "create");
      std::string tar = OneFileTar(absl::StrCat("f", i), "x");
      graph::StringSource src(tar);
      auto r = drv.ApplyDiff(id, parent, src);
      if (!r.ok()) return Fail(r.status(), "apply");
      parent = id;
    }
    for (size_t k = 0; k < depths.size(); ++k) {
      // The image layer at index depth-1 mounts with `depth` lowers (itself
      // plus its parents); depth 1 is a base layer (no mount): use depth 2's
      // container layer semantics instead by skipping it for mounts.
      std::string id = absl::StrCat("l", depths[k] - 1);
      std::vector<double> get, put;
      for (int r = 0; r < runs; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        auto dir = drv.Get(id, "");
        auto t1 = std::chrono::steady_clock::now();
        if (!dir.ok()) return Fail(dir.status(), "get");
        absl::Status s = drv.Put(id);
        auto t2 = std::chrono::steady_clock::now();
        if (!s.ok()) return Fail(s, "put");
        get.push_back(Ms(t0, t1));
        put.push_back(Ms(t1, t2));
      }
      results[k].push_back(Median(get));
      results[k].push_back(Median(put));
    }
    (void)drv.Cleanup();
    (void)graph::RemoveTree(base);
  }
  for (size_t k = 0; k < depths.size(); ++k) {
    std::printf("| %d%s | %.2f | %.2f | %.2f | %.2f |\n", depths[k], depths[k] == 1 ? " (base: no mount)" : "",
                results[k][0], results[k][1], results[k][2], results[k][3]);
  }

  // Create / Get / Put / Remove of a container layer over a 1-layer image.
  std::printf("\n| driver | create ms | get ms | put ms | remove ms |\n|---|---|---|---|---|\n");
  for (const char* name : {"overlay", "vfs"}) {
    std::string base = absl::StrCat(scratch, "/driver-bench-", getpid(), "-", name);
    auto d = graph::OpenDriver(name, base);
    if (!d.ok()) return Fail(d.status(), "open");
    graph::Driver& drv = **d;
    if (absl::Status s = drv.Create("img", "", {}); !s.ok()) return Fail(s, "create img");
    std::string tar = OneFileTar("f", std::string(4096, 'x'));
    graph::StringSource src(tar);
    if (auto r = drv.ApplyDiff("img", "", src); !r.ok()) return Fail(r.status(), "apply");
    std::vector<double> c, g, p, rm;
    graph::CreateOptions rw;
    rw.read_write = true;
    for (int r = 0; r < runs * 4; ++r) {
      std::string id = absl::StrCat("ctr", r);
      auto t0 = std::chrono::steady_clock::now();
      absl::Status s = drv.Create(id, "img", rw);
      auto t1 = std::chrono::steady_clock::now();
      auto dir = drv.Get(id, "");
      auto t2 = std::chrono::steady_clock::now();
      absl::Status s2 = drv.Put(id);
      auto t3 = std::chrono::steady_clock::now();
      absl::Status s3 = drv.Remove(id);
      auto t4 = std::chrono::steady_clock::now();
      if (!s.ok() || !dir.ok() || !s2.ok() || !s3.ok()) return Fail(absl::InternalError("cycle failed"), name);
      c.push_back(Ms(t0, t1));
      g.push_back(Ms(t1, t2));
      p.push_back(Ms(t2, t3));
      rm.push_back(Ms(t3, t4));
    }
    std::printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", name, Median(c), Median(g), Median(p), Median(rm));
    (void)drv.Cleanup();
    (void)graph::RemoveTree(base);
  }
  return 0;
}
