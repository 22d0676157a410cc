#include "tests/support/fio.h"

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"

namespace testsupport {

absl::StatusOr<FioResult> RunFio(const FioSpec& spec) {
  std::vector<std::string> args = {"fio", "--output-format=json", "--name=bench", "--directory=" + spec.dir,
                                   "--filename=" + spec.file, "--rw=" + spec.rw, "--bs=" + spec.bs,
                                   "--size=" + spec.size, "--ioengine=psync", "--iodepth=1", "--numjobs=1",
                                   "--end_fsync=1", "--invalidate=1"};
  if (spec.runtime_s > 0) args.insert(args.end(), {"--time_based", absl::StrCat("--runtime=", spec.runtime_s)});
  args.insert(args.end(), spec.extra.begin(), spec.extra.end());
  FioResult r;
  RunResult run;
  for (bool direct : {true, false}) {
    std::vector<std::string> a = args;
    if (direct) a.push_back("--direct=1");
    auto t0 = std::chrono::steady_clock::now();
    run = Run(a);
    r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.direct = direct;
    if (run.ok()) break;
  }
  if (!run.ok()) return absl::InternalError(absl::StrCat("fio in ", spec.dir, ": ", run.Describe()));
  nlohmann::json j = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("jobs") || j["jobs"].empty()) {
    return absl::InternalError(absl::StrCat("fio in ", spec.dir, " printed no JSON jobs: ", run.out));
  }
  const auto& job = j["jobs"][0];
  const auto& side = (spec.rw == "write" || spec.rw == "randwrite") ? job["write"] : job["read"];
  r.mib_s = side.value("bw_bytes", 0.0) / (1024.0 * 1024.0);
  r.iops = side.value("iops", 0.0);
  return r;
}

}  // namespace testsupport
