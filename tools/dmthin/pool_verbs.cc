// dmthin pool ...: create, list, inspect, activate, grow and destroy pools.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/size.h"
#include "base/status.h"
#include "tools/dmthin/context.h"

namespace dmthin {
namespace {

using cli::Json;

absl::StatusOr<thinpool::DiscardMode> ParseDiscard(const std::string& s) {
  if (s == "passdown") return thinpool::DiscardMode::kPassdown;
  if (s == "nopassdown") return thinpool::DiscardMode::kNoPassdown;
  if (s == "ignore") return thinpool::DiscardMode::kIgnore;
  return cli::UsageError(
      absl::StrCat("--discard: '", s, "' is not one of passdown, nopassdown, ignore"));
}

std::string ModeText(const thinpool::PoolStatus& s) {
  if (!s.active) return "inactive";
  if (s.failed) return "FAILED";
  if (s.read_only) return "read-only";
  if (s.out_of_data_space) return "out-of-data-space";
  return s.needs_check ? "rw,needs-check" : "rw";
}

absl::Status Create(const cli::Args& args, const cli::Output& out) {
  thinpool::PoolOptions o;
  ASSIGN_OR_RETURN(auto data, args.size("data-size"));
  ASSIGN_OR_RETURN(auto meta, args.size("metadata-size"));
  ASSIGN_OR_RETURN(auto block, args.size("block-size"));
  ASSIGN_OR_RETURN(auto lwm, args.number("low-water-mark"));
  if (args.has("data-file") && args.has("data-dev"))
    return cli::UsageError("--data-file and --data-dev exclude each other");
  if (args.has("metadata-file") && args.has("metadata-dev"))
    return cli::UsageError("--metadata-file and --metadata-dev exclude each other");
  if (args.has("data-dev") != args.has("metadata-dev"))
    return cli::UsageError("a device-backed pool needs both --data-dev and --metadata-dev");
  bool devices = args.has("data-dev");
  if (!devices && !data) return cli::UsageError("--data-size is required for a pool on files");
  if (data) o.data_bytes = *data;
  if (meta) o.metadata_bytes = *meta;
  if (block) o.block_bytes = *block;
  if (lwm) o.low_water_blocks = *lwm;
  o.data_file = args.get("data-file").value_or("");
  o.metadata_file = args.get("metadata-file").value_or("");
  o.data_device = args.get("data-dev").value_or("");
  o.metadata_device = args.get("metadata-dev").value_or("");
  o.force_wipe = args.has("wipe");
  o.skip_block_zeroing = args.has("skip-block-zeroing");
  o.error_if_no_space = args.has("error-if-no-space");
  if (auto d = args.get("discard")) {
    ASSIGN_OR_RETURN(o.discard, ParseDiscard(*d));
  }
  const std::string& name = args.positional(0);
  RETURN_IF_ERROR(thinpool::ValidatePoolName(name));
  ASSIGN_OR_RETURN(thinpool::StateDir * state, Ctx().State());
  ASSIGN_OR_RETURN(const dm::Control* dm, Ctx().Dm());
  cli::Progress progress(out, "creating pool " + name);
  ASSIGN_OR_RETURN(auto pool, thinpool::Pool::Create(*state, *dm, name, o));
  progress.Done();
  ASSIGN_OR_RETURN(auto status, pool->Status());
  if (out.json) cli::PrintJson(PoolStatusJson(status));
  else std::printf("created pool %s: %s of data, %s of metadata, %s blocks\n", name.c_str(),
                   base::FormatSize(status.data_total_bytes).c_str(),
                   base::FormatSize(status.metadata_total_bytes).c_str(),
                   base::FormatSize(status.block_bytes).c_str());
  return absl::OkStatus();
}

absl::Status List(const cli::Args&, const cli::Output& out) {
  ASSIGN_OR_RETURN(thinpool::StateDir * state, Ctx().State());
  ASSIGN_OR_RETURN(auto records, state->registry().ListPools());
  Json pools = Json::array();
  cli::Table t({"POOL", "STATE", "BACKING", "DATA USED", "DATA SIZE", "DATA%", "META%", "THINS",
                "TXID"},
               {3, 4, 5, 6, 7, 8});
  for (const auto& r : records) {
    auto pool = Ctx().OpenPool(r.name);
    absl::StatusOr<thinpool::PoolStatus> s =
        pool.ok() ? (*pool)->Status() : absl::StatusOr<thinpool::PoolStatus>(pool.status());
    if (!s.ok()) {
      pools.push_back({{"name", r.name}, {"error", std::string(s.status().message())}});
      t.Add({r.name, "error: " + std::string(s.status().message())});
      continue;
    }
    pools.push_back(PoolStatusJson(*s));
    t.Add({r.name, ModeText(*s), std::string(thinpool::PoolBackingName(r.backing)),
           s->active ? base::FormatSize(s->data_used_bytes) : "-",
           base::FormatSize(s->data_total_bytes),
           s->active ? cli::Percent(s->data_used_bytes, s->data_total_bytes) : "-",
           s->active ? cli::Percent(s->metadata_used_bytes, s->metadata_total_bytes) : "-",
           std::to_string(s->thin_count), std::to_string(s->transaction_id)});
  }
  if (out.json) cli::PrintJson({{"pools", pools}});
  else if (records.empty()) std::printf("no pools in %s\n", state->path().c_str());
  else std::fputs(t.Render().c_str(), stdout);
  return absl::OkStatus();
}

absl::Status Status(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(auto s, pool->Status());
  ASSIGN_OR_RETURN(auto record, pool->Record());
  Json j = PoolStatusJson(s);
  j["data_path"] = record.data_path;
  j["metadata_path"] = record.metadata_path;
  j["backing"] = std::string(thinpool::PoolBackingName(record.backing));
  j["low_water_mark_blocks"] = record.low_water_blocks;
  j["features"] = record.features;
  if (out.json) {
    cli::PrintJson(j);
    return absl::OkStatus();
  }
  cli::Table t({"FIELD", "VALUE"});
  t.Add({"pool", s.name});
  t.Add({"state", ModeText(s)});
  t.Add({"device", s.active ? "/dev/mapper/" + s.device : "-"});
  t.Add({"backing", j["backing"].get<std::string>()});
  t.Add({"data", record.data_path});
  t.Add({"metadata", record.metadata_path});
  t.Add({"block size", base::FormatSize(s.block_bytes)});
  if (s.active) {
    t.Add({"data used", cli::UsedOfTotal(s.data_used_bytes, s.data_total_bytes)});
    t.Add({"metadata used", cli::UsedOfTotal(s.metadata_used_bytes, s.metadata_total_bytes)});
  } else {
    t.Add({"data size", base::FormatSize(s.data_total_bytes)});
    t.Add({"metadata size", base::FormatSize(s.metadata_total_bytes)});
  }
  t.Add({"low water mark", absl::StrCat(record.low_water_blocks, " blocks")});
  t.Add({"transaction id", std::to_string(s.transaction_id)});
  t.Add({"thin devices", std::to_string(s.thin_count)});
  if (s.discard) t.Add({"discard", std::string(DiscardName(*s.discard))});
  t.Add({"when full", s.error_if_no_space ? "error I/O" : "queue I/O until grown"});
  t.Add({"needs check", s.needs_check ? "yes (dmthin pool check --repair)" : "no"});
  if (s.pending)
    t.Add({"pending operation",
           absl::StrCat(thinpool::OpKindName(s.pending->kind), " of id ", s.pending->dev_id,
                        " (txid ", s.pending->old_txid, " -> ", s.pending->new_txid,
                        "); 'dmthin pool check' resolves it")});
  std::fputs(t.Render().c_str(), stdout);
  return absl::OkStatus();
}

absl::Status Activate(const cli::Args& args, const cli::Output& out) {
  std::vector<std::string> names;
  if (args.has("all")) {
    if (args.positional_count() > 0) return cli::UsageError("give a pool NAME or --all, not both");
    ASSIGN_OR_RETURN(thinpool::StateDir * state, Ctx().State());
    ASSIGN_OR_RETURN(auto records, state->registry().ListPools());
    for (const auto& r : records) names.push_back(r.name);
  } else {
    if (args.positional_count() != 1) return cli::UsageError("give a pool NAME or --all");
    names.push_back(args.positional(0));
  }
  Json results = Json::array();
  std::vector<std::string> failed;
  for (const auto& name : names) {
    absl::Status s;
    auto pool = Ctx().OpenPool(name);
    if (pool.ok()) s = (*pool)->Activate();
    else s = pool.status();
    results.push_back({{"name", name}, {"ok", s.ok()}, {"error", std::string(s.message())}});
    if (!s.ok()) {
      failed.push_back(name);
      if (!out.json) std::fprintf(stderr, "dmthin pool activate: %s: %s\n", name.c_str(),
                                  std::string(s.message()).c_str());
    } else if (!out.json) {
      std::printf("%s active\n", name.c_str());
    }
  }
  if (out.json) cli::PrintJson({{"pools", results}});
  if (!failed.empty())
    return absl::UnavailableError(absl::StrCat("could not activate ", absl::StrJoin(failed, ", ")));
  return absl::OkStatus();
}

absl::Status Deactivate(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  absl::Status s = pool->Deactivate(args.has("force"));
  // With --force the library's message says what holds a thin device.
  if (!s.ok() && base::HasErrno(s, EBUSY) && !args.has("force"))
    return base::Annotate(s, "in use (deactivate its thin devices, or --force)");
  RETURN_IF_ERROR(s);
  if (out.json) cli::PrintJson({{"name", pool->name()}, {"active", false}});
  else std::printf("%s inactive\n", pool->name().c_str());
  return absl::OkStatus();
}

absl::Status Resize(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto data, args.size("data-size"));
  ASSIGN_OR_RETURN(auto meta, args.size("metadata-size"));
  if (!data && !meta) return cli::UsageError("give --data-size and/or --metadata-size");
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  {
    cli::Progress progress(out, "resizing " + pool->name());
    RETURN_IF_ERROR(pool->Resize(data, meta));
  }
  ASSIGN_OR_RETURN(auto s, pool->Status());
  if (out.json) cli::PrintJson(PoolStatusJson(s));
  else std::printf("resized pool %s: data %s, metadata %s\n", s.name.c_str(),
                   cli::UsedOfTotal(s.data_used_bytes, s.data_total_bytes).c_str(),
                   cli::UsedOfTotal(s.metadata_used_bytes, s.metadata_total_bytes).c_str());
  return absl::OkStatus();
}

absl::Status Destroy(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  absl::Status s = pool->Destroy(args.has("force"));
  if (!s.ok() && !args.has("force") && (base::HasErrno(s, EBUSY) || absl::IsFailedPrecondition(s)))
    return base::Annotate(s, "not destroyed (deactivate its thin devices first, or --force)");
  if (!s.ok()) return base::Annotate(s, "not destroyed");
  RETURN_IF_ERROR(s);
  if (out.json) cli::PrintJson({{"name", args.positional(0)}, {"destroyed", true}});
  else std::printf("destroyed %s\n", args.positional(0).c_str());
  return absl::OkStatus();
}

absl::Status Check(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto pool, Ctx().OpenPool(args.positional(0)));
  ASSIGN_OR_RETURN(thinpool::CheckReport report, pool->Check(args.has("repair")));
  if (out.json) {
    cli::PrintJson({{"name", pool->name()},
                    {"clean", report.clean()},
                    {"repairable", report.repairable},
                    {"findings", report.findings},
                    {"actions", report.actions}});
  } else {
    for (const auto& f : report.findings) std::printf("found: %s\n", f.c_str());
    for (const auto& a : report.actions) std::printf("did:   %s\n", a.c_str());
    if (report.clean()) std::printf("%s: registry and kernel agree\n", pool->name().c_str());
  }
  if (report.clean()) return absl::OkStatus();
  // Problems left are an error with or without --repair (a script must not
  // take a repair that left a finding for a clean pool). Name --repair only
  // when it helps: a full pool needs a resize.
  if (args.has("repair")) {
    return absl::DataLossError(absl::StrCat(pool->name(), " still has problems after --repair: ",
                                            report.findings.front()));
  }
  return absl::DataLossError(
      report.repairable
          ? absl::StrCat(pool->name(), " has problems: run 'dmthin pool check ", pool->name(),
                         " --repair'")
          : absl::StrCat(pool->name(), " has problems: ", report.findings.front()));
}

}  // namespace

absl::string_view DiscardName(thinpool::DiscardMode mode) {
  switch (mode) {
    case thinpool::DiscardMode::kPassdown: return "passdown";
    case thinpool::DiscardMode::kNoPassdown: return "nopassdown";
    case thinpool::DiscardMode::kIgnore: return "ignore";
  }
  return "?";
}

Json PoolStatusJson(const thinpool::PoolStatus& s) {
  Json j{{"name", s.name},
         {"active", s.active},
         {"device", s.active ? "/dev/mapper/" + s.device : ""},
         {"transaction_id", s.transaction_id},
         {"block_bytes", s.block_bytes},
         {"data_used_bytes", s.data_used_bytes},
         {"data_total_bytes", s.data_total_bytes},
         {"metadata_used_bytes", s.metadata_used_bytes},
         {"metadata_total_bytes", s.metadata_total_bytes},
         {"failed", s.failed},
         {"read_only", s.read_only},
         {"out_of_data_space", s.out_of_data_space},
         {"needs_check", s.needs_check},
         {"discard", s.discard ? Json(std::string(DiscardName(*s.discard))) : Json(nullptr)},
         {"error_if_no_space", s.error_if_no_space},
         {"thin_count", s.thin_count}};
  if (s.pending)
    j["pending"] = {{"op", std::string(thinpool::OpKindName(s.pending->kind))},
                    {"dev_id", s.pending->dev_id},
                    {"old_txid", s.pending->old_txid},
                    {"new_txid", s.pending->new_txid}};
  else
    j["pending"] = nullptr;
  return j;
}

void AddPoolVerbs(cli::App& app) {
  app.AddVerb({"pool create", {"NAME"},
               {{"data-size", "SIZE", "data capacity (files: the sparse file's size)"},
                {"metadata-size", "SIZE", "metadata size, >= 2M (default: 48 bytes per block)"},
                {"data-file", "PATH", "sparse data file (default DIR/NAME/data)"},
                {"metadata-file", "PATH", "sparse metadata file (default DIR/NAME/metadata)"},
                {"data-dev", "DEV", "use this block device for data"},
                {"metadata-dev", "DEV", "use this block device for metadata"},
                {"wipe", "", "allow wiping a metadata device that is not blank"},
                {"block-size", "SIZE",
                 "allocation unit, 64K..1G in 64K steps (default: 64K, larger above ~21T of data)"},
                {"low-water-mark", "BLOCKS",
                 "free data blocks that trigger an event, 0: none (default: 20% of the blocks)"},
                {"discard", "MODE", "passdown (default), nopassdown or ignore"},
                {"skip-block-zeroing", "", "do not zero newly provisioned blocks"},
                {"error-if-no-space", "", "fail writes when full instead of queueing them"}},
               "create a pool and activate it",
               "Creates a thin pool. By default its data and metadata are sparse files in the\n"
               "state dir attached to loop devices; --data-dev/--metadata-dev use block devices.\n\n"
               "examples:\n"
               "  dmthin pool create p0 --data-size 100G\n"
               "  dmthin pool create p1 --data-size 20G --metadata-size 256M --block-size 256K \\\n"
               "      --discard nopassdown --error-if-no-space\n"
               "  dmthin pool create fast --data-dev /dev/nvme0n1p3 --metadata-dev /dev/nvme0n1p2",
               Create});
  app.AddVerb({"pool list", {}, {}, "list pools with their usage", "", List});
  app.AddVerb({"pool status", {"NAME"}, {}, "every field of one pool's status",
               "Shows the kernel's view (transaction id, used/total data and metadata, mode,\n"
               "needs_check, discard, no-space policy) and the registry's (files, pending\n"
               "operation).",
               Status});
  app.AddVerb({"pool activate", {"[NAME]"}, {{"all", "", "every registered pool"}},
               "attach files, check metadata, load the pool",
               "Re-attaches a file-backed pool's loop devices, runs thin_check on the metadata\n"
               "when the tool is installed (refusing a pool that fails it), loads the pool and\n"
               "finishes any operation a crash interrupted. Idempotent.\n\n"
               "examples:\n  dmthin pool activate p0\n  dmthin pool activate --all",
               Activate});
  app.AddVerb({"pool deactivate", {"NAME"},
               {{"force", "", "deactivate the pool's active thin devices first"}},
               "remove the pool device and detach its loops", "", Deactivate});
  app.AddVerb({"pool resize", {"NAME"},
               {{"data-size", "SIZE", "new data size (grow only)"},
                {"metadata-size", "SIZE", "new metadata size (grow only)"}},
               "grow data and/or metadata online",
               "examples:\n  dmthin pool resize p0 --data-size 200G\n"
               "  dmthin pool resize p0 --metadata-size 1G",
               Resize});
  app.AddVerb({"pool destroy", {"NAME"},
               {{"force", "", "deactivate active thin devices first"}},
               "deactivate and forget a pool (file-backed: delete its files)", "", Destroy});
  app.AddVerb({"pool check", {"NAME"}, {{"repair", "", "fix what can be fixed"}},
               "reconcile registry and kernel; run thin_check",
               "Compares the registry with the kernel's metadata (thin ids, transaction id,\n"
               "pending operation) and runs thin_check when installed. Exits 1 when problems\n"
               "remain; --repair finishes or undoes interrupted operations and quarantines ids\n"
               "the kernel has but the registry does not.",
               Check});
}

}  // namespace dmthin
