#include "tests/support/thinpool_cleanup.h"

#include <filesystem>

#include "libdm/control.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace testsupport {

absl::Status DestroyDriverPools(const std::string& driver_root) {
  const std::string state_dir = driver_root + "/thinpool";
  // StateDir keeps its registry in .registry.db (docs/dmthin.md).
  if (!std::filesystem::exists(state_dir + "/.registry.db")) return absl::OkStatus();
  auto state = thinpool::StateDir::Open(state_dir);
  if (!state.ok()) return state.status();
  auto dm = dm::Control::Open();
  if (!dm.ok()) return dm.status();
  auto pools = (*state)->registry().ListPools();
  if (!pools.ok()) return pools.status();
  absl::Status first;
  for (const auto& p : *pools) {
    auto pool = thinpool::Pool::Open(**state, **dm, p.name);
    absl::Status s = pool.ok() ? (*pool)->Destroy(/*force=*/true) : pool.status();
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

}  // namespace testsupport
