// Process-wide driver registry and automatic driver selection.
#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "graph/driver.h"

namespace graph {
namespace internal {
std::vector<DriverInfo> BuiltinDrivers();
}  // namespace internal

namespace {

struct Registry {
  std::mutex mu;
  std::vector<DriverInfo> drivers;  // sorted by (priority, name)
};

void SortDrivers(std::vector<DriverInfo>& drivers) {
  std::stable_sort(drivers.begin(), drivers.end(),
                   [](const DriverInfo& a, const DriverInfo& b) {
                     if (a.priority != b.priority) return a.priority < b.priority;
                     return a.name < b.name;
                   });
}

Registry& GetRegistry() {
  static Registry* registry = [] {
    auto* r = new Registry;
    r->drivers = internal::BuiltinDrivers();
    SortDrivers(r->drivers);
    return r;
  }();
  return *registry;
}

}  // namespace

absl::Status RegisterDriver(DriverInfo info) {
  if (info.name.empty() || !info.probe || !info.create) {
    return absl::InvalidArgumentError(
        "driver registration needs a name, a probe and a factory");
  }
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const DriverInfo& d : r.drivers) {
    if (d.name == info.name) {
      return absl::AlreadyExistsError(
          absl::StrCat("driver \"", info.name, "\" is already registered"));
    }
  }
  r.drivers.push_back(std::move(info));
  SortDrivers(r.drivers);
  return absl::OkStatus();
}

std::vector<DriverInfo> RegisteredDrivers() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.drivers;
}

namespace {
DriverOptions OptionsFor(const DriverInfo& info, const std::string& base_root,
                         const std::map<std::string, std::string>& options) {
  DriverOptions o;
  o.root = base_root.empty() ? info.name : absl::StrCat(base_root, "/", info.name);
  o.options = options;
  return o;
}
}  // namespace

std::vector<ProbeReport> ProbeDrivers(
    const std::string& base_root,
    const std::map<std::string, std::string>& options) {
  std::vector<ProbeReport> reports;
  for (const DriverInfo& info : RegisteredDrivers()) {
    reports.push_back(
        {info.name, info.probe(OptionsFor(info, base_root, options))});
  }
  return reports;
}

absl::StatusOr<std::unique_ptr<Driver>> OpenDriver(
    const std::string& name, const std::string& base_root,
    const std::map<std::string, std::string>& options,
    std::shared_ptr<LayerRecords> records) {
  std::vector<DriverInfo> drivers = RegisteredDrivers();
  if (!name.empty()) {
    for (const DriverInfo& info : drivers) {
      if (info.name != name) continue;
      DriverOptions o = OptionsFor(info, base_root, options);
      absl::Status probe = info.probe(o);
      if (!probe.ok()) return probe;
      o.records = records;
      return info.create(o);
    }
    std::vector<std::string> names;
    for (const DriverInfo& info : drivers) names.push_back(info.name);
    return absl::NotFoundError(absl::StrCat("unknown graph driver \"", name,
                                            "\" (known: ",
                                            absl::StrJoin(names, ", "), ")"));
  }
  std::vector<std::string> reasons;
  for (const DriverInfo& info : drivers) {
    DriverOptions o = OptionsFor(info, base_root, options);
    absl::Status probe = info.probe(o);
    if (!probe.ok()) {
      reasons.push_back(absl::StrCat(info.name, ": ", probe.message()));
      continue;
    }
    o.records = records;
    return info.create(o);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no graph driver can serve ", base_root,
      reasons.empty() ? " (no drivers registered)"
                      : absl::StrCat(": ", absl::StrJoin(reasons, "; "))));
}

}  // namespace graph
