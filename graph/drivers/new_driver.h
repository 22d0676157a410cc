// The common end of a driver's DriverInfo::create: construct, then Init.
#ifndef DMTHIN_GRAPH_DRIVERS_NEW_DRIVER_H_
#define DMTHIN_GRAPH_DRIVERS_NEW_DRIVER_H_

#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "base/status.h"
#include "graph/driver.h"

namespace graph {

// Constructs a D from `args` and runs its `absl::Status Init()`; the driver,
// or Init's error (the half-made driver is dropped).
template <typename D, typename... Args>
absl::StatusOr<std::unique_ptr<Driver>> NewInitializedDriver(Args&&... args) {
  auto driver = std::make_unique<D>(std::forward<Args>(args)...);
  RETURN_IF_ERROR(driver->Init());
  return std::unique_ptr<Driver>(std::move(driver));
}

}  // namespace graph

#endif  // DMTHIN_GRAPH_DRIVERS_NEW_DRIVER_H_
