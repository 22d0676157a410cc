// dmthin thin ...: thin devices and snapshots in a pool.
#include "absl/strings/str_cat.h"
#include "base/size.h"
#include "base/status.h"
#include "thinpool/filesystem.h"
#include "tools/dmthin/context.h"

namespace dmthin {
namespace {

using cli::Json;

void PrintThin(const thinpool::ThinInfo& t) {
  cli::Table table({"FIELD", "VALUE"});
  table.Add({"name", t.name});
  table.Add({"id", std::to_string(t.dev_id)});
  table.Add({"size", base::FormatSize(t.size_bytes)});
  table.Add({"origin", t.parent_name.value_or("-")});
  table.Add({"state", std::string(thinpool::ThinStateName(t.state))});
  table.Add({"active", t.active ? "yes" : "no"});
  table.Add({"path", t.active ? t.device : "-"});
  table.Add({"mapped", t.mapped_bytes ? cli::UsedOfTotal(*t.mapped_bytes, t.size_bytes) : "-"});
  table.Add({"dm name", t.dm_name});
  table.Add({"dm uuid", t.dm_uuid});
  std::fputs(table.Render().c_str(), stdout);
}

absl::Status Create(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto size, args.size("size"));
  if (!size) return cli::UsageError("--size is required");
  auto fs = args.get("mkfs");
  if (fs && *fs != "ext4") return cli::UsageError("--mkfs: only ext4 is supported");
  RETURN_IF_ERROR(thinpool::ValidateThinName(args.positional(1)));
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(auto thin, pool->CreateThin(args.positional(1), *size, /*activate=*/true));
  if (fs) {
    cli::Progress progress(out, "making ext4 on " + thin.name);
    absl::Status made = thinpool::MakeExt4(thin.device, {});
    if (!made.ok())
      return base::Annotate(made, absl::StrCat("thin device ", thin.name,
                                               " was created but mkfs failed; 'dmthin thin delete ",
                                               pool->name(), " ", thin.name, "' removes it"));
    ASSIGN_OR_RETURN(thin, pool->GetThinInfo(thin.name));
  }
  if (out.json) cli::PrintJson(ThinJson(thin));
  else std::printf("created %s (id %u, %s) at %s\n", thin.name.c_str(), thin.dev_id,
                   base::FormatSize(thin.size_bytes).c_str(), thin.device.c_str());
  return absl::OkStatus();
}

absl::Status Snapshot(const cli::Args& args, const cli::Output& out) {
  RETURN_IF_ERROR(thinpool::ValidateThinName(args.positional(2)));
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(auto snap, pool->Snapshot(args.positional(1), args.positional(2),
                                             /*activate=*/!args.has("inactive")));
  if (out.json) cli::PrintJson(ThinJson(snap));
  else std::printf("created snapshot %s of %s (id %u)%s%s\n", snap.name.c_str(),
                   args.positional(1).c_str(), snap.dev_id, snap.active ? " at " : "",
                   snap.active ? snap.device.c_str() : "");
  return absl::OkStatus();
}

absl::Status Delete(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  thinpool::DeleteOptions options;
  options.discard = args.has("discard");
  cli::Progress progress(out, "deleting " + args.positional(1));
  absl::Status s = pool->DeleteThin(args.positional(1), options);
  progress.Done();
  if (!s.ok() && base::HasErrno(s, EBUSY))
    return base::Annotate(s, "the device is in use (unmount it first)");
  RETURN_IF_ERROR(s);
  if (out.json) cli::PrintJson({{"pool", pool->name()}, {"name", args.positional(1)}, {"deleted", true}});
  else std::printf("deleted %s\n", args.positional(1).c_str());
  return absl::OkStatus();
}

absl::Status List(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(auto thins, pool->ListThins());
  if (out.json) {
    Json a = Json::array();
    for (const auto& t : thins) a.push_back(ThinJson(t));
    cli::PrintJson({{"pool", pool->name()}, {"thins", a}});
    return absl::OkStatus();
  }
  if (thins.empty()) {
    std::printf("no thin devices in %s\n", pool->name().c_str());
    return absl::OkStatus();
  }
  cli::Table t({"NAME", "ID", "SIZE", "MAPPED", "MAPPED%", "ORIGIN", "STATE", "PATH"}, {1, 2, 3, 4});
  for (const auto& th : thins)
    t.Add({th.name, std::to_string(th.dev_id), base::FormatSize(th.size_bytes),
           th.mapped_bytes ? base::FormatSize(*th.mapped_bytes) : "-",
           th.mapped_bytes ? cli::Percent(*th.mapped_bytes, th.size_bytes) : "-",
           th.parent_name.value_or("-"),
           th.state == thinpool::ThinState::kReady ? (th.active ? "active" : "inactive")
                                                   : std::string(thinpool::ThinStateName(th.state)),
           th.active ? th.device : "-"});
  std::fputs(t.Render().c_str(), stdout);
  return absl::OkStatus();
}

absl::Status Activate(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(auto thin, pool->ActivateThin(args.positional(1)));
  if (out.json) cli::PrintJson(ThinJson(thin));
  else std::printf("%s\n", thin.device.c_str());
  return absl::OkStatus();
}

absl::Status Deactivate(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  absl::Status s = pool->DeactivateThin(args.positional(1));
  if (!s.ok() && base::HasErrno(s, EBUSY))
    return base::Annotate(s, "the device is in use (unmount it first)");
  RETURN_IF_ERROR(s);
  if (out.json) cli::PrintJson({{"pool", pool->name()}, {"name", args.positional(1)}, {"active", false}});
  else std::printf("%s inactive\n", args.positional(1).c_str());
  return absl::OkStatus();
}

absl::Status Info(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(auto thin, pool->GetThinInfo(args.positional(1)));
  if (out.json) cli::PrintJson(ThinJson(thin));
  else PrintThin(thin);
  return absl::OkStatus();
}

}  // namespace

Json ThinJson(const thinpool::ThinInfo& t) {
  return Json{{"name", t.name},
              {"id", t.dev_id},
              {"size_bytes", t.size_bytes},
              {"origin", t.parent_name ? Json(*t.parent_name) : Json(nullptr)},
              {"origin_id", t.parent_id ? Json(*t.parent_id) : Json(nullptr)},
              {"state", std::string(thinpool::ThinStateName(t.state))},
              {"active", t.active},
              {"path", t.active ? Json(t.device) : Json(nullptr)},
              {"mapped_bytes", t.mapped_bytes ? Json(*t.mapped_bytes) : Json(nullptr)},
              {"dm_name", t.dm_name},
              {"dm_uuid", t.dm_uuid}};
}

void AddThinVerbs(cli::App& app) {
  app.AddVerb({"thin create", {"POOL", "NAME"},
               {{"size", "SIZE", "virtual size (may exceed the pool: thin provisioning)"},
                {"mkfs", "FS", "make a filesystem on it (ext4, made in-process)"}},
               "create a thin device (active)",
               "examples:\n  dmthin thin create p0 base --size 10G --mkfs ext4\n"
               "  dmthin thin create p0 scratch --size 1T", Create});
  app.AddVerb({"thin snapshot", {"POOL", "ORIGIN", "NAME"},
               {{"inactive", "", "do not activate the snapshot"}},
               "snapshot a thin device (active or not)",
               "An active origin is suspended for the instant of the snapshot and always\n"
               "resumed. Snapshots of snapshots are fine; deleting the origin keeps them.\n\n"
               "example:\n  dmthin thin snapshot p0 base layer1", Snapshot});
  app.AddVerb({"thin delete", {"POOL", "NAME"},
               {{"discard", "", "discard its blocks first (returns space to the host)"}},
               "deactivate and delete a thin device", "", Delete});
  app.AddVerb({"thin list", {"POOL"}, {}, "thin devices of a pool with their usage", "", List});
  app.AddVerb({"thin activate", {"POOL", "NAME"}, {}, "activate; prints the device path", "",
               Activate});
  app.AddVerb({"thin deactivate", {"POOL", "NAME"}, {}, "remove the thin's dm device", "",
               Deactivate});
  app.AddVerb({"thin info", {"POOL", "NAME"}, {}, "path, id, size and mapped bytes", "", Info});
}

}  // namespace dmthin
