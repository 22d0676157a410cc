// What every dmthin verb shares: the global options and, opened on first use,
// the device-mapper control handle and the state dir.
#ifndef DMTHIN_TOOLS_DMTHIN_CONTEXT_H_
#define DMTHIN_TOOLS_DMTHIN_CONTEXT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "libdm/control.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"
#include "tools/common/cli.h"

namespace dmthin {

class Context {
 public:
  std::string state_dir = thinpool::kDefaultStateDir;

  // Opened once, with a hint on how to get device-mapper when it is missing.
  absl::StatusOr<const dm::Control*> Dm();
  absl::StatusOr<thinpool::StateDir*> State();
  // Opens a registered pool; NotFound says how to list pools.
  absl::StatusOr<std::unique_ptr<thinpool::Pool>> OpenPool(const std::string& name);

 private:
  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
};

Context& Ctx();

void AddDmVerbs(cli::App& app);
void AddPoolVerbs(cli::App& app);
void AddThinVerbs(cli::App& app);
void AddMonitorVerb(cli::App& app);
void AddUdevVerbs(cli::App& app);
void AddVolumeVerbs(cli::App& app);

// JSON and table helpers shared by the pool and thin verbs.
cli::Json PoolStatusJson(const thinpool::PoolStatus& s);
cli::Json ThinJson(const thinpool::ThinInfo& t);
absl::string_view DiscardName(thinpool::DiscardMode mode);

}  // namespace dmthin

#endif  // DMTHIN_TOOLS_DMTHIN_CONTEXT_H_
