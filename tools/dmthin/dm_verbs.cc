// dmthin dm ...: a small dmsetup-like view of every device-mapper device,
// for debugging (ours carry the DMTHIN- uuid prefix).
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "tools/dmthin/context.h"

namespace dmthin {
namespace {

using cli::Json;

absl::StatusOr<dm::Name> DmName(const std::string& s) {
  auto n = dm::Name::Create(s);
  if (!n.ok()) return cli::UsageError(std::string(n.status().message()));
  return n;
}

Json InfoJson(const dm::DeviceInfo& i) {
  return Json{{"name", i.name},
              {"uuid", i.uuid},
              {"dev", i.dev.ToString()},
              {"open_count", i.open_count},
              {"event_nr", i.event_nr},
              {"targets", i.target_count},
              {"suspended", i.suspended()},
              {"read_only", i.read_only()},
              {"live_table", i.live_table()},
              {"inactive_table", i.inactive_table()},
              {"deferred_remove", i.deferred_remove()}};
}

Json LinesJson(const std::vector<dm::wire::TargetLine>& lines) {
  Json a = Json::array();
  for (const auto& l : lines)
    a.push_back({{"start", l.start}, {"length", l.length}, {"type", l.type}, {"params", l.params}});
  return a;
}

void PrintLines(const std::vector<dm::wire::TargetLine>& lines) {
  for (const auto& l : lines)
    std::printf("%llu %llu %s%s%s\n", static_cast<unsigned long long>(l.start),
                static_cast<unsigned long long>(l.length), l.type.c_str(),
                l.params.empty() ? "" : " ", l.params.c_str());
}

}  // namespace

void AddDmVerbs(cli::App& app) {
  app.AddVerb({"dm ls", {}, {}, "list all device-mapper devices",
               "Lists every device-mapper device on the system, with its number and uuid.",
               [](const cli::Args&, const cli::Output& out) -> absl::Status {
                 ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
                 ASSIGN_OR_RETURN(auto devices, dm->List());
                 // Kernels before dm ioctl 4.46 list no uuids: ask each device.
                 for (auto& d : devices) {
                   if (d.uuid_known) continue;
                   auto info = dm->Info(d.dev);
                   if (info.ok() && !info->uuid.empty()) d.uuid = info->uuid;
                 }
                 if (out.json) {
                   Json a = Json::array();
                   for (const auto& d : devices)
                     a.push_back({{"name", d.name},
                                  {"dev", d.dev.ToString()},
                                  {"uuid", d.uuid.value_or("")}});
                   cli::PrintJson({{"devices", a}});
                   return absl::OkStatus();
                 }
                 if (devices.empty()) {
                   std::printf("No devices found\n");
                   return absl::OkStatus();
                 }
                 cli::Table t({"NAME", "DEV", "UUID"});
                 for (const auto& d : devices) t.Add({d.name, d.dev.ToString(), d.uuid.value_or("")});
                 std::fputs(t.Render().c_str(), stdout);
                 return absl::OkStatus();
               }});
  app.AddVerb({"dm info", {"NAME"}, {}, "state of one device (open count, event, flags)", "",
               [](const cli::Args& args, const cli::Output& out) -> absl::Status {
                 ASSIGN_OR_RETURN(dm::Name name, DmName(args.positional(0)));
                 ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
                 ASSIGN_OR_RETURN(dm::DeviceInfo info, dm->Info(name));
                 if (out.json) {
                   cli::PrintJson(InfoJson(info));
                   return absl::OkStatus();
                 }
                 cli::Table t({"FIELD", "VALUE"});
                 Json j = InfoJson(info);
                 for (auto& [k, v] : j.items())
                   t.Add({k, v.is_string() ? v.get<std::string>() : v.dump()});
                 std::fputs(t.Render().c_str(), stdout);
                 return absl::OkStatus();
               }});
  app.AddVerb({"dm table", {"NAME"}, {{"inactive", "", "the inactive (loaded, not resumed) table"}},
               "a device's table, as the kernel has it", "",
               [](const cli::Args& args, const cli::Output& out) -> absl::Status {
                 ASSIGN_OR_RETURN(dm::Name name, DmName(args.positional(0)));
                 ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
                 ASSIGN_OR_RETURN(auto lines, dm->TableLines(name, args.has("inactive")));
                 if (out.json) cli::PrintJson({{"name", name.str()}, {"table", LinesJson(lines)}});
                 else PrintLines(lines);
                 return absl::OkStatus();
               }});
  app.AddVerb({"dm status", {"NAME"}, {}, "a device's target status lines", "",
               [](const cli::Args& args, const cli::Output& out) -> absl::Status {
                 ASSIGN_OR_RETURN(dm::Name name, DmName(args.positional(0)));
                 ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
                 ASSIGN_OR_RETURN(auto lines, dm->Status(name));
                 if (out.json) cli::PrintJson({{"name", name.str()}, {"status", LinesJson(lines)}});
                 else PrintLines(lines);
                 return absl::OkStatus();
               }});
  app.AddVerb({"dm remove", {"NAME"},
               {{"deferred", "", "if the device is open, remove it when its last user closes it"}},
               "remove a device (retrying briefly while busy)",
               "Removes a device-mapper device. A device that stays busy is refused unless\n"
               "--deferred, which removes it once its last user closes it.",
               [](const cli::Args& args, const cli::Output& out) -> absl::Status {
                 ASSIGN_OR_RETURN(dm::Name name, DmName(args.positional(0)));
                 ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
                 dm::RemoveOptions options;
                 options.deferred = args.has("deferred");
                 auto removed = dm->Remove(name, options);
                 if (!removed.ok()) {
                   if (base::HasErrno(removed.status(), EBUSY))
                     return base::Annotate(removed.status(),
                                           "device is in use (unmount or close it, or use --deferred)");
                   return removed.status();
                 }
                 bool deferred = *removed == dm::Removal::kDeferred;
                 if (out.json) cli::PrintJson({{"name", name.str()}, {"deferred", deferred}});
                 else std::printf("%s %s\n", name.str().c_str(),
                                  deferred ? "will be removed when its last user closes it" : "removed");
                 return absl::OkStatus();
               }});
}

}  // namespace dmthin
