// dmthin monitor: the autoextend monitor in the foreground (for a systemd
// unit): grows pools before they fill, as dmeventd's thin plugin does.
#include <csignal>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "base/size.h"
#include "base/status.h"
#include "thinpool/monitor.h"
#include "tools/dmthin/context.h"

namespace dmthin {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

void Report(const thinpool::MonitorEvent& e, bool json) {
  if (json) {
    cli::Json j{{"time", static_cast<int64_t>(std::time(nullptr))},
                {"event", std::string(thinpool::MonitorEventKindName(e.kind))},
                {"pool", e.pool},
                {"old_bytes", e.old_bytes},
                {"new_bytes", e.new_bytes},
                {"message", e.message}};
    std::printf("%s\n", j.dump(-1, ' ', false, cli::Json::error_handler_t::replace).c_str());  // one JSON object per line
  } else {
    std::printf("%s %s: %s\n", e.pool.c_str(),
                std::string(thinpool::MonitorEventKindName(e.kind)).c_str(), e.message.c_str());
  }
  std::fflush(stdout);
}

absl::Status Monitor(const cli::Args& args, const cli::Output& out) {
  thinpool::AutoextendPolicy policy;
  ASSIGN_OR_RETURN(auto threshold, args.percent("threshold"));
  ASSIGN_OR_RETURN(auto extend, args.percent("extend"));
  ASSIGN_OR_RETURN(auto max_size, args.size("max-size"));
  ASSIGN_OR_RETURN(auto interval, args.number("interval"));
  ASSIGN_OR_RETURN(auto repeat, args.number("repeat"));
  if (threshold) policy.threshold_percent = *threshold;
  if (extend) policy.step_percent = *extend;
  if (max_size) policy.max_data_bytes = *max_size;
  if (interval) policy.poll_interval = absl::Seconds(*interval);
  if (repeat) policy.repeat_interval = absl::Seconds(*repeat);
  absl::Status valid = policy.Validate();
  if (!valid.ok()) return cli::UsageError(std::string(valid.message()));

  ASSIGN_OR_RETURN(thinpool::StateDir * state, Ctx().State());
  ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
  bool json = out.json;
  thinpool::Monitor monitor(*state, *dm, policy, args.get_all("pool"),
                            [json](const thinpool::MonitorEvent& e) { Report(e, json); });
  if (args.has("once")) {
    ASSIGN_OR_RETURN(auto events, monitor.CheckOnce());
    for (const auto& e : events) Report(e, json);
    return absl::OkStatus();
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  RETURN_IF_ERROR(monitor.Start());
  if (!json)
    std::printf("monitoring pools (extend at %.0f%% by %.0f%%%s); Ctrl-C stops\n",
                policy.threshold_percent, policy.step_percent,
                max_size ? absl::StrCat(", up to ", base::FormatSize(*max_size)).c_str() : "");
  std::fflush(stdout);
  while (!g_stop) pause();
  monitor.Stop();
  return absl::OkStatus();
}

}  // namespace

void AddMonitorVerb(cli::App& app) {
  app.AddVerb({"monitor", {},
               {{"threshold", "PCT", "extend when data or metadata use reaches PCT (default 80)"},
                {"extend", "PCT", "grow by PCT of the current size (default 20)"},
                {"max-size", "SIZE", "never grow data beyond SIZE (default: no limit)"},
                {"interval", "SECONDS", "poll interval besides kernel events (default 1)"},
                {"repeat", "SECONDS",
                 "repeat a lasting condition (full, cannot extend) this often (default 600)"},
                {"pool", "NAME", "watch only this pool (repeatable; default all)", true},
                {"once", "", "check once and exit"}},
               "autoextend pools before they fill (foreground)",
               "Waits for the pools' device-mapper events (low-water mark) and polls; grows\n"
               "data and metadata by the policy and reports when it cannot. Runs in the\n"
               "foreground for systemd (udev-rules/dmthin-monitor.service). A condition is\n"
               "reported when it starts, every --repeat seconds while it lasts, and when it\n"
               "clears; a device a dead process left suspended is resumed and reported.\n\n"
               "example:\n  dmthin monitor --threshold 70 --extend 25 --max-size 500G",
               Monitor});
}

}  // namespace dmthin
