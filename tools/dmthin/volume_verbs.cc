// dmthin volume ...: managed volumes (libvolume) on thin devices or
// quota'd directories.
#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/size.h"
#include "base/status.h"
#include "tools/dmthin/context.h"
#include "volume/store.h"

namespace dmthin {
namespace {

using cli::Json;

// Every volume verb takes these: where the store is, and (first time) which
// pool and data dir it uses.
std::vector<cli::Option> StoreOptionsFor(std::vector<cli::Option> own = {}) {
  own.push_back({"volume-root", "DIR",
                 "the volume store (default <state-dir>/.volumes)"});
  own.push_back({"pool", "POOL",
                 "thin pool for thin volumes (recorded at first use)"});
  own.push_back({"data-dir", "DIR",
                 "where directory volumes live (recorded at first use; default "
                 "<volume-root>/data)"});
  return own;
}

absl::StatusOr<std::unique_ptr<volume::VolumeStore>> OpenStore(const cli::Args& args) {
  volume::StoreOptions o;
  o.root = args.get("volume-root").value_or(Ctx().state_dir + "/.volumes");
  o.data_dir = args.get("data-dir").value_or("");
  o.pool = args.get("pool").value_or("");
  o.thin_state_dir = Ctx().state_dir;
  if (!args.has("volume-root")) {
    // <state-dir> itself must exist (and be private) first.
    ASSIGN_OR_RETURN(thinpool::StateDir * state, Ctx().State());
    (void)state;
  }
  auto store = volume::VolumeStore::Open(o);
  if (!store.ok()) return base::Annotate(store.status(), absl::StrCat("volume store ", o.root));
  return store;
}

absl::StatusOr<std::map<std::string, std::string>> Labels(const cli::Args& args) {
  std::map<std::string, std::string> labels;
  for (const std::string& kv : args.get_all("label")) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return cli::UsageError(absl::StrCat("--label ", kv, ": want KEY=VALUE"));
    }
    labels[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return labels;
}

std::string SizeText(uint64_t bytes) { return bytes ? base::FormatSize(bytes) : "-"; }

void PrintVolume(const volume::VolumeInfo& v) {
  cli::Table table({"FIELD", "VALUE"});
  table.Add({"name", v.name});
  table.Add({"backend", std::string(volume::BackendName(v.backend))});
  table.Add({"state", v.state});
  table.Add({"fs", v.fs});
  table.Add({"size", SizeText(v.size_bytes)});
  table.Add({"origin", v.origin.empty() ? "-" : v.origin});
  std::vector<std::string> labels;
  for (const auto& [k, val] : v.labels) labels.push_back(absl::StrCat(k, "=", val));
  table.Add({"labels", labels.empty() ? "-" : absl::StrJoin(labels, ",")});
  table.Add({"mountpoint", v.path.empty() ? "-" : v.path});
  table.Add({"mounts", std::to_string(v.mount_refs)});
  table.Add({"populated", v.populated ? "yes" : "no"});
  std::fputs(table.Render().c_str(), stdout);
}

Json VolumeJson(const volume::VolumeInfo& v) {
  Json labels = Json::object();
  for (const auto& [k, val] : v.labels) labels[k] = val;
  return Json{{"name", v.name},
              {"backend", std::string(volume::BackendName(v.backend))},
              {"state", v.state},
              {"fs", v.fs},
              {"size_bytes", v.size_bytes},
              {"origin", v.origin.empty() ? Json(nullptr) : Json(v.origin)},
              {"labels", labels},
              {"mountpoint", v.path.empty() ? Json(nullptr) : Json(v.path)},
              {"mount_refs", v.mount_refs},
              {"mounted", v.mounted},
              {"populated", v.populated},
              {"created_unix", v.created_unix}};
}

void Print(const volume::VolumeInfo& v, const cli::Output& out, absl::string_view what) {
  if (out.json) {
    cli::PrintJson(VolumeJson(v));
  } else {
    std::printf("%s %s (%s, %s, %s)\n", std::string(what).c_str(), v.name.c_str(),
                std::string(volume::BackendName(v.backend)).c_str(), v.fs.c_str(),
                v.size_bytes ? base::FormatSize(v.size_bytes).c_str() : "no size limit");
  }
}

absl::Status Create(const cli::Args& args, const cli::Output& out) {
  RETURN_IF_ERROR(volume::ValidateVolumeName(args.positional(0)));
  volume::CreateOptions co;
  ASSIGN_OR_RETURN(auto size, args.size("size"));
  co.size_bytes = size.value_or(0);
  co.fs = args.get("fs").value_or("");
  ASSIGN_OR_RETURN(co.labels, Labels(args));
  if (auto b = args.get("backend")) {
    ASSIGN_OR_RETURN(co.backend, volume::ParseBackend(*b));
  }
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  ASSIGN_OR_RETURN(auto v, store->Create(args.positional(0), co));
  Print(v, out, "created");
  return absl::OkStatus();
}

absl::Status SnapshotOrClone(const cli::Args& args, const cli::Output& out, absl::string_view what) {
  RETURN_IF_ERROR(volume::ValidateVolumeName(args.positional(1)));
  ASSIGN_OR_RETURN(auto labels, Labels(args));
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  ASSIGN_OR_RETURN(auto v, store->Snapshot(args.positional(0), args.positional(1), labels));
  Print(v, out, absl::StrCat("created ", what, " of ", args.positional(0), ":"));
  return absl::OkStatus();
}

absl::Status Remove(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  Json removed = Json::array();
  for (size_t i = 0; i < args.positional_count(); ++i) {
    const std::string& name = args.positional(i);
    absl::Status s = store->Remove(name, args.has("force"));
    if (!s.ok() && base::HasErrno(s, EBUSY)) {
      return base::Annotate(s, absl::StrCat("'dmthin volume rm --force ", name,
                                            "' unmounts and removes it anyway"));
    }
    RETURN_IF_ERROR(s);
    removed.push_back(name);
    if (!out.json) std::printf("removed %s\n", name.c_str());
  }
  if (out.json) cli::PrintJson({{"removed", removed}});
  return absl::OkStatus();
}

absl::Status List(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  ASSIGN_OR_RETURN(auto volumes, store->List());
  if (out.json) {
    Json a = Json::array();
    for (const auto& v : volumes) a.push_back(VolumeJson(v));
    cli::PrintJson({{"volumes", a}});
    return absl::OkStatus();
  }
  if (volumes.empty()) {
    std::printf("no volumes in %s\n", store->root().c_str());
    return absl::OkStatus();
  }
  cli::Table t({"NAME", "BACKEND", "FS", "SIZE", "MOUNTS", "STATE", "MOUNTPOINT"}, {3, 4});
  for (const auto& v : volumes) {
    t.Add({v.name, std::string(volume::BackendName(v.backend)), v.fs, SizeText(v.size_bytes),
           std::to_string(v.mount_refs), v.state, v.path.empty() ? "-" : v.path});
  }
  std::fputs(t.Render().c_str(), stdout);
  return absl::OkStatus();
}

absl::Status Inspect(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  ASSIGN_OR_RETURN(auto v, store->Get(args.positional(0)));
  std::optional<volume::Usage> usage;
  if (v.state == "ready") {
    absl::StatusOr<volume::Usage> u = store->GetUsage(v.name);
    if (u.ok()) usage = *u;
  }
  if (out.json) {
    Json j = VolumeJson(v);
    j["used_bytes"] = usage ? Json(usage->used_bytes) : Json(nullptr);
    cli::PrintJson(j);
  } else {
    PrintVolume(v);
    std::printf("used        %s\n",
                usage ? (usage->size_bytes ? cli::UsedOfTotal(usage->used_bytes, usage->size_bytes)
                                           : base::FormatSize(usage->used_bytes))
                            .c_str()
                      : "-");
  }
  return absl::OkStatus();
}

absl::Status Mount(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  std::string caller = args.get("caller").value_or("dmthin");
  ASSIGN_OR_RETURN(std::string path, store->Mount(args.positional(0), caller));
  if (out.json) cli::PrintJson({{"name", args.positional(0)}, {"mountpoint", path}});
  else std::printf("%s\n", path.c_str());
  return absl::OkStatus();
}

absl::Status Unmount(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  std::string caller = args.get("caller").value_or("dmthin");
  RETURN_IF_ERROR(store->Unmount(args.positional(0), caller));
  ASSIGN_OR_RETURN(auto v, store->Get(args.positional(0)));
  if (out.json) cli::PrintJson({{"name", v.name}, {"mount_refs", v.mount_refs}, {"mounted", v.mounted}});
  else std::printf("%s: %llu mount references left\n", v.name.c_str(),
                   static_cast<unsigned long long>(v.mount_refs));
  return absl::OkStatus();
}

absl::Status Resize(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto size, args.size("size"));
  if (!size) return cli::UsageError("--size is required");
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  RETURN_IF_ERROR(store->Grow(args.positional(0), *size));
  ASSIGN_OR_RETURN(auto v, store->Get(args.positional(0)));
  Print(v, out, "resized");
  return absl::OkStatus();
}

absl::Status Populate(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  RETURN_IF_ERROR(store->Populate(args.positional(0), args.positional(1), args.has("nocopy")));
  ASSIGN_OR_RETURN(auto v, store->Get(args.positional(0)));
  if (out.json) cli::PrintJson(VolumeJson(v));
  else std::printf("%s populated\n", v.name.c_str());
  return absl::OkStatus();
}

absl::Status Check(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto store, OpenStore(args));
  ASSIGN_OR_RETURN(auto report, store->Check(args.has("repair")));
  if (out.json) {
    cli::PrintJson({{"clean", report.clean()},
                    {"findings", report.findings},
                    {"actions", report.actions}});
  } else {
    for (const auto& a : report.actions) std::printf("repaired: %s\n", a.c_str());
    for (const auto& f : report.findings) std::printf("problem: %s\n", f.c_str());
    if (report.clean()) std::printf("volume store %s is clean\n", store->root().c_str());
  }
  if (!report.clean()) {
    return absl::DataLossError(absl::StrCat(report.findings.size(), " problems found",
                                            args.has("repair") ? "" : " (--repair fixes what it can)"));
  }
  return absl::OkStatus();
}

}  // namespace

void AddVolumeVerbs(cli::App& app) {
  std::vector<cli::Option> label = {{"label", "KEY=VALUE", "a label (repeatable)", true}};
  app.AddVerb({"volume create", {"NAME"},
               StoreOptionsFor({{"size", "SIZE", "size (thin: required; directory: btrfs qgroup limit)"},
                                {"fs", "FS", "thin: ext4 (default) or xfs"},
                                {"backend", "thin|directory",
                                 "default: thin when the store has a pool, else directory"},
                                label[0]}),
               "create a volume",
               "A thin volume is a thin device of the store's pool with its own filesystem;\n"
               "a directory volume is a btrfs subvolume (its size a qgroup limit) or, on\n"
               "other filesystems, a plain directory that takes no size.\n\n"
               "examples:\n  dmthin volume create db --pool p0 --size 10G\n"
               "  dmthin volume create cache --data-dir /srv/btrfs/volumes --size 64M",
               Create});
  app.AddVerb({"volume rm", {"NAME..."},
               StoreOptionsFor({{"force", "", "unmount first if mounted"}}),
               "remove volumes (refused while mounted)", "", Remove});
  app.AddVerb({"volume ls", {}, StoreOptionsFor(), "list volumes", "", List});
  app.AddVerb({"volume inspect", {"NAME"}, StoreOptionsFor(),
               "a volume's record, mountpoint and usage", "", Inspect});
  app.AddVerb({"volume mount", {"NAME"},
               StoreOptionsFor({{"caller", "ID", "who holds the reference (default dmthin)"}}),
               "count a mount reference; prints the path",
               "References are counted per caller and in total: a caller that mounts\n"
               "twice unmounts twice. The first reference mounts a thin volume.", Mount});
  app.AddVerb({"volume unmount", {"NAME"},
               StoreOptionsFor({{"caller", "ID", "whose reference to drop (default dmthin)"}}),
               "drop a mount reference (the last one unmounts)", "", Unmount});
  app.AddVerb({"volume snapshot", {"SOURCE", "NAME"}, StoreOptionsFor(label),
               "a new volume holding SOURCE's data now (thin or btrfs snapshot)", "",
               [](const cli::Args& a, const cli::Output& o) { return SnapshotOrClone(a, o, "snapshot"); }});
  app.AddVerb({"volume clone", {"SOURCE", "NAME"}, StoreOptionsFor(label),
               "a writable copy of SOURCE to use (same operation as snapshot)", "",
               [](const cli::Args& a, const cli::Output& o) { return SnapshotOrClone(a, o, "clone"); }});
  app.AddVerb({"volume resize", {"NAME"}, StoreOptionsFor({{"size", "SIZE", "the new, larger size"}}),
               "grow a volume", "", Resize});
  app.AddVerb({"volume populate", {"NAME", "DIR"},
               StoreOptionsFor({{"nocopy", "", "only mark it populated"}}),
               "copy DIR into the volume once, if it is still empty (copy-up)", "", Populate});
  app.AddVerb({"volume check", {}, StoreOptionsFor({{"repair", "", "undo or finish interrupted work"}}),
               "compare the volume registry with the filesystems and mounts", "", Check});
}

}  // namespace dmthin
