// The drivers built into libgraph, in no particular order (DriverInfo's
// priority orders them).
//
// A driver in this library defines `graph::DriverInfo <Name>DriverInfo()` in
// its own .cc file and adds one line here. An explicit list, rather than
// self-registering static objects, because the linker drops unreferenced
// objects from static libraries and static initialisation order is
// unspecified.
#include <vector>

#include "graph/driver.h"

namespace graph {

// Each defined in graph/drivers/<name>.cc.
DriverInfo AufsDriverInfo();
DriverInfo BtrfsDriverInfo();
DriverInfo OverlayDriverInfo();
DriverInfo VfsDriverInfo();
DriverInfo DevmapperDriverInfo();
DriverInfo ZfsDriverInfo();

namespace internal {

std::vector<DriverInfo> BuiltinDrivers() {
  std::vector<DriverInfo> drivers;
  drivers.push_back(AufsDriverInfo());
  drivers.push_back(BtrfsDriverInfo());
  drivers.push_back(OverlayDriverInfo());
  drivers.push_back(VfsDriverInfo());
  drivers.push_back(DevmapperDriverInfo());
  drivers.push_back(ZfsDriverInfo());
  return drivers;
}

}  // namespace internal
}  // namespace graph
