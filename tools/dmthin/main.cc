// dmthin: the administrator's tool for thin pools on sparse files, loop
// devices or block devices. It parses, calls libthinpool/libdm, and prints.
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "tools/common/cli.h"
#include "tools/dmthin/context.h"

namespace dmthin {

Context& Ctx() {
  static Context context;
  return context;
}

absl::StatusOr<const dm::Control*> Context::Dm() {
  if (!dm_) {
    auto control = dm::Control::Open();
    if (!control.ok()) {
      std::string hint;
      if (base::HasErrno(control.status(), ENOENT) || base::HasErrno(control.status(), ENODEV) ||
          base::HasErrno(control.status(), ENXIO))
        hint = " (this kernel has no device-mapper: 'modprobe dm-thin-pool', or use the VM: "
               "tests/vm/run -- build/bin/dmthin ...)";
      else if (base::HasErrno(control.status(), EACCES) || base::HasErrno(control.status(), EPERM))
        hint = " (device-mapper needs root: run dmthin as root)";
      return base::Annotate(control.status(), absl::StrCat("opening device-mapper", hint));
    }
    dm_ = std::move(*control);
  }
  return dm_.get();
}

absl::StatusOr<thinpool::StateDir*> Context::State() {
  if (!state_) {
    auto state = thinpool::StateDir::Open(state_dir);
    if (!state.ok()) return base::Annotate(state.status(), absl::StrCat("state dir ", state_dir));
    state_ = std::move(*state);
  }
  return state_.get();
}

absl::StatusOr<std::unique_ptr<thinpool::Pool>> Context::OpenPool(const std::string& name) {
  RETURN_IF_ERROR(thinpool::ValidatePoolName(name));
  ASSIGN_OR_RETURN(thinpool::StateDir * state, State());
  ASSIGN_OR_RETURN(const dm::Control* dm, Dm());
  auto pool = thinpool::Pool::Open(*state, *dm, name);
  if (!pool.ok() && absl::IsNotFound(pool.status()))
    return absl::NotFoundError(absl::StrCat("no pool '", name, "' in ", state_dir,
                                            " ('dmthin pool list' shows the pools)"));
  return pool;
}

}  // namespace dmthin

int main(int argc, char** argv) {
  cli::App app("dmthin",
               "Thin-provisioned storage pools on sparse files, loop devices or block devices,\n"
               "with crash-safe thin devices and snapshots (device-mapper dm-thin), and managed\n"
               "volumes on thin devices or quota'd directories.");
  app.AddGlobal({{"state-dir", "DIR", "where pools are registered (default /var/lib/dmthin)"},
                 [](const std::string& v) { dmthin::Ctx().state_dir = v; }});
  dmthin::AddPoolVerbs(app);
  dmthin::AddThinVerbs(app);
  dmthin::AddMonitorVerb(app);
  dmthin::AddDmVerbs(app);
  dmthin::AddUdevVerbs(app);
  dmthin::AddVolumeVerbs(app);
  return app.Main(argc, argv);
}
