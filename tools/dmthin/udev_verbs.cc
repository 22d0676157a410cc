// dmthin udev ...: what udev-rules/69-dmthin.rules runs when a block device
// appears. `match` must be quick and read-only; `activate` must not block
// udev (activation makes dm devices whose events udev has to process).
#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "thinpool/device_match.h"
#include "tools/dmthin/context.h"

namespace dmthin {
namespace {

absl::Status Match(const cli::Args& args, const cli::Output&) {
  // udev asks about every block device: a machine without dmthin pools must
  // not get a state dir created by this.
  struct stat st;
  if (stat(Ctx().state_dir.c_str(), &st) != 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(thinpool::StateDir * state, Ctx().State());
  ASSIGN_OR_RETURN(auto match, thinpool::MatchBackingDevice(*state, args.positional(0)));
  if (!match) return absl::OkStatus();
  // udev IMPORT{program} format: KEY=value lines. DMTHIN_POOL only once the
  // pool is complete, so the rule starts activation exactly then.
  std::printf("DMTHIN_ROLE=%s\nDMTHIN_POOL_OF_DEVICE=%s\n", match->role.c_str(),
              match->pool.c_str());
  if (match->complete) std::printf("DMTHIN_POOL=%s\n", match->pool.c_str());
  return absl::OkStatus();
}

absl::Status Activate(const cli::Args& args, const cli::Output&) {
  const std::string pool = args.positional(0);
  RETURN_IF_ERROR(thinpool::ValidatePoolName(pool));
  // Detach: fork, new session, fork again; udev's RUN returns at once and the
  // grandchild is nobody's child to wait for.
  pid_t pid = fork();
  if (pid < 0) return base::ErrnoError(errno, "fork");
  if (pid > 0) return absl::OkStatus();
  setsid();
  if (fork() != 0) _exit(0);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
  }
  openlog("dmthin", LOG_PID, LOG_DAEMON);
  absl::Status s;
  auto opened = Ctx().OpenPool(pool);
  if (opened.ok()) s = (*opened)->Activate();
  else s = opened.status();
  if (s.ok()) syslog(LOG_INFO, "pool %s activated (udev)", pool.c_str());
  else syslog(LOG_ERR, "pool %s: activation failed: %s", pool.c_str(), std::string(s.message()).c_str());
  _exit(s.ok() ? 0 : 1);
}

}  // namespace

void AddUdevVerbs(cli::App& app) {
  app.AddVerb({"udev match", {"DEVICE"}, {},
               "(for udev rules) which pool a block device backs",
               "Prints DMTHIN_ROLE=data|metadata and DMTHIN_POOL_OF_DEVICE=NAME when DEVICE is\n"
               "a registered pool's data or metadata device (a loop device by its backing\n"
               "file), and DMTHIN_POOL=NAME once all of the pool's devices are present.\n"
               "Prints nothing for other devices. Read-only; creates no state dir.",
               Match});
  app.AddVerb({"udev activate", {"POOL"}, {},
               "(for udev rules) activate a pool in the background",
               "Returns at once; a detached process activates the pool and logs to syslog.",
               Activate});
}

}  // namespace dmthin
