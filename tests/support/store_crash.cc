#include "tests/support/store_crash.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "graph/stream.h"
#include "tests/support/graph_tar.h"

namespace testsupport {

int RunStoreOpUntilFailpoint(const std::string& root, const std::string& driver,
                             const std::map<std::string, std::string>& options, const std::string& failpoint,
                             StoreOp op, const std::string& base) {
  std::string tar = BuildTar({{"two", '0', "2"}});
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::setenv("DMTHIN_FAILPOINT", failpoint.c_str(), 1);
    auto store = graph::OpenLayerStore(root, driver, options);
    if (!store.ok()) ::_exit(2);
    absl::Status s;
    graph::CreateLayerOptions o;
    o.init_layer = true;
    graph::StringSource src(tar);
    switch (op) {
      case StoreOp::kCreate: s = (*store)->Create("ctr2", base, o).status(); break;
      case StoreOp::kCommit: s = (*store)->Commit("snap", "ctr").status(); break;
      case StoreOp::kRemove: s = (*store)->Remove("ctr"); break;
      case StoreOp::kImport: s = (*store)->Import(src, {}).status(); break;
      case StoreOp::kUnmount:
      case StoreOp::kRemoveBusy: {
        absl::StatusOr<std::string> dir = (*store)->Mount("ctr");
        if (!dir.ok()) ::_exit(3);
        // Held until the child exits (a crash closes it too).
        int held = op == StoreOp::kRemoveBusy ? ::open(dir->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (op == StoreOp::kRemoveBusy && held < 0) ::_exit(3);
        s = (*store)->Unmount("ctr");
        if (s.ok() && op == StoreOp::kRemoveBusy) s = (*store)->Remove("ctr");
        // What the driver's own threads do next (devicemapper's reaper
        // deactivating after the last Put) gets time to reach its failpoint.
        if (s.ok() && op == StoreOp::kUnmount) std::this_thread::sleep_for(std::chrono::seconds(3));
        break;
      }
    }
    ::_exit(s.ok() ? 0 : 3);
  }
  int wstatus = 0;
  if (::waitpid(pid, &wstatus, 0) != pid || !WIFEXITED(wstatus)) return -1;
  return WEXITSTATUS(wstatus);
}

std::string CheckReportText(const graph::CheckReport& report) {
  return absl::StrCat("problems: ", absl::StrJoin(report.problems, " | "), "; repaired: ",
                      absl::StrJoin(report.repaired, " | "));
}

::testing::AssertionResult RepairLeavesStoreClean(graph::LayerStore& store) {
  absl::StatusOr<graph::CheckReport> repaired = store.Check(true);
  if (!repaired.ok()) return ::testing::AssertionFailure() << "check --repair: " << repaired.status();
  absl::StatusOr<graph::CheckReport> after = store.Check(false);
  if (!after.ok()) return ::testing::AssertionFailure() << "check after repair: " << after.status();
  if (!after->clean()) {
    return ::testing::AssertionFailure() << CheckReportText(*after)
                                         << " after repair: " << CheckReportText(*repaired);
  }
  return ::testing::AssertionSuccess();
}

}  // namespace testsupport
