// Test support for benchmarks: run one fio job (argv, no shell) and read its
// JSON result.
#ifndef DMTHIN_TESTS_SUPPORT_FIO_H_
#define DMTHIN_TESTS_SUPPORT_FIO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace testsupport {

struct FioSpec {
  std::string dir;       // --directory
  std::string file;      // --filename (in dir)
  std::string rw;        // write, read, randwrite, randread
  std::string bs;        // 4k, 1M
  std::string size;      // 256M
  int runtime_s = 0;     // > 0: time_based for that long
  std::vector<std::string> extra;  // more --options
};

struct FioResult {
  double mib_s = 0;
  double iops = 0;
  double wall_s = 0;    // the whole fio process, open (and any copy-up) included
  bool direct = false;  // O_DIRECT (false: the filesystem refused it, buffered)
};

// psync, iodepth 1, one job, end_fsync, the file's cache invalidated before
// the job; O_DIRECT where the filesystem takes it, else buffered.
absl::StatusOr<FioResult> RunFio(const FioSpec& spec);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_FIO_H_
