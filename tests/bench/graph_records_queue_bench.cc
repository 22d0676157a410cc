// Benchmark: what devicemapper's Put path pays to queue a device's
// deactivation for the reaper, and the reaper (or a Get that cancels it)
// to take it off, side by side in one run, alternating per iteration:
// the marker file earlier releases used (create an empty
// <root>/deactivate/<id>; unlink it) against the driver-wide entry in the
// records' database (LayerRecords::PutEntry relaxed; GetEntry +
// DeleteEntry), in a driver's own records.db. Also a Get's cancel when
// nothing is queued (the entry: one read).
//
//   build/bench/graph_records_queue_bench [--iterations N] [--dir SCRATCH]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "graph/records.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double Micros(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 2000;
  std::string scratch = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--dir") == 0) scratch = argv[i + 1];
  }
  namespace fs = std::filesystem;
  const std::string root = scratch + "/graph-records-queue-bench-" + std::to_string(::getpid());
  fs::create_directories(root + "/deactivate");
  auto records = graph::LayerRecords::Open(root + "/records.db");
  if (!records.ok()) {
    std::fprintf(stderr, "%s\n", std::string(records.status().message()).c_str());
    return 1;
  }
  std::vector<double> file_queue, file_take, entry_queue, entry_take, entry_nothing;
  for (int i = 0; i < iterations; ++i) {
    const std::string id = "layer" + std::to_string(i % 50);
    const std::string marker = root + "/deactivate/" + id;
    auto t0 = Clock::now();
    int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) ::close(fd);
    auto t1 = Clock::now();
    (void)::unlink(marker.c_str());
    auto t2 = Clock::now();
    (void)(*records)->PutEntry({"deactivate", id, {}}, /*relaxed=*/true);
    auto t3 = Clock::now();
    auto queued = (*records)->GetEntry("deactivate", id);
    if (queued.ok() && *queued) (void)(*records)->DeleteEntry("deactivate", id);
    auto t4 = Clock::now();
    (void)(*records)->GetEntry("deactivate", id);
    auto t5 = Clock::now();
    file_queue.push_back(Micros(t0, t1));
    file_take.push_back(Micros(t1, t2));
    entry_queue.push_back(Micros(t2, t3));
    entry_take.push_back(Micros(t3, t4));
    entry_nothing.push_back(Micros(t4, t5));
  }
  std::error_code ec;
  fs::remove_all(root, ec);
  std::printf("%d iterations, median us\n\n", iterations);
  std::printf("| step | marker file | records entry | entry / file |\n|---|---:|---:|---:|\n");
  std::printf("| queue (Put) | %.1f | %.1f | %.2f |\n", Median(file_queue), Median(entry_queue),
              Median(entry_queue) / Median(file_queue));
  std::printf("| take off (reaper, or a Get cancelling) | %.1f | %.1f | %.2f |\n", Median(file_take),
              Median(entry_take), Median(entry_take) / Median(file_take));
  std::printf("| a Get's cancel, nothing queued | (unlink: ENOENT) | %.1f (one read) | |\n", Median(entry_nothing));
  return 0;
}
