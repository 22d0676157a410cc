// graphctl: layers on the command line — import OCI layer tarballs, create
// container layers and views, mount them, export diffs, check and repair the
// store. It parses, calls libgraph (graph::LayerStore), and prints.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/size.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "base/utf8.h"
#include "graph/driver.h"
#include "graph/store.h"
#include "graph/stream.h"
#include "tools/common/cli.h"
#include "tools/common/storage_opts.h"

namespace graphctl {
namespace {

struct Context {
  std::string root = "/var/lib/dmthin/graph";
  std::string driver;
  // --storage-opt KEY=VALUE as given, in order; checked by StorageOptions().
  std::vector<std::string> storage_opts;
  std::unique_ptr<graph::LayerStore> store;

  // The driver options, or a usage error naming the malformed or repeated
  // --storage-opt.
  absl::StatusOr<std::map<std::string, std::string>> StorageOptions() const {
    return cli::ParseStorageOptions(storage_opts);
  }

  absl::StatusOr<graph::LayerStore*> Store() {
    if (!store) {
      ASSIGN_OR_RETURN(auto options, StorageOptions());
      auto opened = graph::OpenLayerStore(root, driver, options);
      if (!opened.ok()) {
        std::string hint;
        if (graph::GetUnsupported(opened.status()).has_value()) {
          hint = " ('graphctl status' lists what each driver needs)";
        } else if (opened.status().code() == absl::StatusCode::kInvalidArgument && !storage_opts.empty()) {
          // The driver refused an option: say which ones were given.
          hint = absl::StrCat(" with --storage-opt ", absl::StrJoin(storage_opts, " --storage-opt "));
        }
        return base::Annotate(opened.status(), absl::StrCat("opening layer store ", root, hint));
      }
      store = std::move(*opened);
    }
    return store.get();
  }
};

Context& Ctx() {
  static Context context;
  return context;
}

std::string Short(const std::string& name) {
  // Chain ids are long; show them like docker does (sha256:12 hex).
  if (name.rfind("sha256:", 0) == 0 && name.size() == 71) return name.substr(0, 19);
  return base::EscapeForText(name);
}

std::string Time(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

cli::Json LayerJson(const graph::LayerInfo& l) {
  cli::Json j;
  j["name"] = l.name;
  j["kind"] = graph::LayerKindName(l.kind);
  j["parent"] = l.parent;
  j["cache_id"] = l.cache_id;
  if (!l.init_id.empty()) j["init_id"] = l.init_id;
  if (!l.diff_id.empty()) {
    j["diff_id"] = l.diff_id;
    j["chain_id"] = l.chain_id;
    j["size"] = l.size;
    j["tar_size"] = l.tar_size;
  }
  j["refs"] = l.refs;
  j["children"] = l.children;
  j["created"] = Time(l.created);
  j["updated"] = Time(l.updated);
  cli::Json labels = cli::Json::object();
  for (const auto& [k, v] : l.labels) labels[k] = v;
  j["labels"] = labels;
  return j;
}

absl::StatusOr<std::map<std::string, std::string>> Labels(const cli::Args& args) {
  std::map<std::string, std::string> labels;
  for (const std::string& kv : args.get_all("label")) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty()) return cli::UsageError(absl::StrCat("--label wants KEY=VALUE, got '", kv, "'"));
    labels[p.first] = p.second;
  }
  return labels;
}

// ---------------------------------------------------------------- verbs ---

absl::Status Import(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  const std::string& path = args.positional(0);
  base::UniqueFd owned;
  int fd = STDIN_FILENO;
  uint64_t total = 0;
  if (path != "-") {
    owned.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned) return base::ErrnoError(errno, absl::StrCat("open ", path));
    RETURN_IF_ERROR(base::Annotate(graph::FdSource::Check(owned.get()), path));
    struct stat st;
    if (::fstat(owned.get(), &st) == 0 && S_ISREG(st.st_mode)) total = static_cast<uint64_t>(st.st_size);
    fd = owned.get();
  } else if (isatty(STDIN_FILENO)) {
    return cli::UsageError("refusing to read a tarball from a terminal; pipe one in or name a file");
  } else {
    RETURN_IF_ERROR(base::Annotate(graph::FdSource::Check(STDIN_FILENO), "stdin"));
  }
  graph::ImportOptions options;
  options.parent = args.get("parent").value_or("");
  ASSIGN_OR_RETURN(options.labels, Labels(args));
  cli::Progress progress(out, absl::StrCat("importing ", path == "-" ? "stdin" : path));
  options.progress = [&](uint64_t bytes) {
    progress.Update(total ? static_cast<double>(bytes) / static_cast<double>(total) : 0.0,
                    total ? base::FormatSize(bytes) + " of " + base::FormatSize(total)
                          : base::FormatSize(bytes));
  };
  graph::FdSource source(fd);
  absl::StatusOr<graph::LayerInfo> layer = store->Import(source, options);
  progress.Done();
  if (!layer.ok()) return base::Annotate(layer.status(), absl::StrCat("import ", path));
  if (out.json) {
    cli::PrintJson(LayerJson(*layer));
  } else {
    std::cout << layer->name << "\n";
  }
  return absl::OkStatus();
}

absl::Status Create(const cli::Args& args, const cli::Output& out) {
  if (args.has("no-init") && !args.has("rw")) return cli::UsageError("--no-init goes with --rw");
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  graph::CreateLayerOptions options;
  if (args.has("rw")) {
    options.kind = graph::LayerKind::kActive;
    options.init_layer = !args.has("no-init");
  } else {
    options.kind = graph::LayerKind::kView;
  }
  ASSIGN_OR_RETURN(options.labels, Labels(args));
  ASSIGN_OR_RETURN(graph::LayerInfo layer,
                   store->Create(args.positional(0), args.get("parent").value_or(""), options));
  if (out.json) {
    cli::PrintJson(LayerJson(layer));
  } else {
    std::cout << layer.name << "\n";
  }
  return absl::OkStatus();
}

absl::Status Commit(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  ASSIGN_OR_RETURN(auto labels, Labels(args));
  ASSIGN_OR_RETURN(graph::LayerInfo layer, store->Commit(args.positional(1), args.positional(0), labels));
  if (out.json) {
    cli::PrintJson(LayerJson(layer));
  } else {
    std::cout << layer.name << "\n";
  }
  return absl::OkStatus();
}

absl::Status Mount(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  ASSIGN_OR_RETURN(std::string dir, store->Mount(args.positional(0)));
  if (out.json) {
    cli::PrintJson(cli::Json{{"name", args.positional(0)}, {"path", dir}});
  } else {
    std::cout << dir << "\n";
  }
  return absl::OkStatus();
}

absl::Status Umount(const cli::Args& args, const cli::Output&) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  return store->Unmount(args.positional(0));
}

absl::Status Diff(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  std::optional<std::string> file = args.get("o");
  base::UniqueFd owned;
  int fd = STDOUT_FILENO;
  std::string tmp;
  if (file && *file != "-") {
    // Write next to the target and rename: no half tarball under the name.
    tmp = absl::StrCat(*file, ".tmp-", ::getpid());
    owned.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!owned) return base::ErrnoError(errno, absl::StrCat("create ", tmp));
    fd = owned.get();
  } else if (isatty(STDOUT_FILENO)) {
    return cli::UsageError("refusing to write a tarball to a terminal; use -o FILE or a pipe");
  } else {
    RETURN_IF_ERROR(base::Annotate(graph::FdSink::Check(STDOUT_FILENO), "stdout"));
  }
  graph::FdSink sink(fd);
  absl::StatusOr<graph::DiffResult> r = store->Diff(args.positional(0), sink);
  if (!tmp.empty()) {
    if (r.ok() && ::fsync(fd) != 0) r = base::ErrnoError(errno, absl::StrCat("fsync ", tmp));
    owned.reset();
    if (r.ok() && ::rename(tmp.c_str(), file->c_str()) != 0) {
      r = base::ErrnoError(errno, absl::StrCat("rename to ", *file));
    }
    if (!r.ok()) ::unlink(tmp.c_str());
  }
  if (!r.ok()) return r.status();
  if (!tmp.empty()) {
    if (out.json) {
      cli::PrintJson(cli::Json{{"file", *file}, {"diff_id", r->diff_id}, {"bytes", r->tar_bytes}});
    } else {
      std::cout << r->diff_id << "\n";
    }
  } else {
    std::cerr << r->diff_id << "\n";
  }
  return absl::OkStatus();
}

absl::Status Changes(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  ASSIGN_OR_RETURN(std::vector<graph::Change> changes, store->Changes(args.positional(0)));
  if (out.json) {
    cli::Json list = cli::Json::array();
    for (const auto& c : changes) list.push_back({{"path", c.path}, {"kind", graph::ChangeKindName(c.kind)}});
    cli::PrintJson(list);
    return absl::OkStatus();
  }
  for (const auto& c : changes) {
    // docker diff's letters: A added, C changed, D deleted.
    const char* letter = c.kind == graph::ChangeKind::kAdd ? "A"
                         : c.kind == graph::ChangeKind::kDelete ? "D" : "C";
    std::cout << letter << " " << base::EscapeForText(c.path) << "\n";  // one line per change, whatever the name
  }
  return absl::OkStatus();
}

absl::Status Remove(const cli::Args& args, const cli::Output&) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  graph::RemoveOptions options;
  options.force = args.has("force");
  return store->Remove(args.positional(0), options);
}

absl::Status List(const cli::Args&, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  ASSIGN_OR_RETURN(std::vector<graph::LayerInfo> layers, store->List());
  if (out.json) {
    cli::Json list = cli::Json::array();
    for (const auto& l : layers) list.push_back(LayerJson(l));
    cli::PrintJson(list);
    return absl::OkStatus();
  }
  cli::Table table({"NAME", "KIND", "PARENT", "SIZE", "REFS", "CREATED"}, {3, 4});
  for (const auto& l : layers) {
    table.Add({Short(l.name), graph::LayerKindName(l.kind), l.parent.empty() ? "-" : Short(l.parent),
               l.diff_id.empty() ? "-" : base::FormatSize(static_cast<uint64_t>(l.size)),
               std::to_string(l.refs), Time(l.created)});
  }
  std::cout << table.Render();
  return absl::OkStatus();
}

absl::Status Inspect(const cli::Args& args, const cli::Output&) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  ASSIGN_OR_RETURN(graph::LayerInfo layer, store->Stat(args.positional(0)));
  cli::Json j = LayerJson(layer);
  cli::Json data = cli::Json::object();
  absl::StatusOr<std::map<std::string, std::string>> meta = store->Metadata(layer.name);
  if (meta.ok()) {
    for (const auto& [k, v] : *meta) data[k] = v;
  } else {
    data["error"] = std::string(meta.status().message());
  }
  j["graph_driver"] = {{"name", store->driver().Name()}, {"data", data}};
  cli::Json mounts = cli::Json::array();
  absl::StatusOr<std::vector<graph::MountSpec>> specs = store->Mounts(layer.name);
  if (specs.ok()) {
    for (const auto& m : *specs) {
      mounts.push_back({{"type", m.type}, {"source", m.source}, {"target", m.target}, {"options", m.options}});
    }
    j["mounts"] = mounts;
  }
  cli::PrintJson(j);  // inspect always speaks JSON, like docker inspect
  return absl::OkStatus();
}

absl::Status Status(const cli::Args&, const cli::Output& out) {
  Context& ctx = Ctx();
  ASSIGN_OR_RETURN(auto options, ctx.StorageOptions());
  std::vector<graph::ProbeReport> probes = graph::ProbeDrivers(ctx.root, options);
  absl::StatusOr<graph::LayerStore*> store = ctx.Store();
  cli::Json j;
  j["root"] = ctx.root;
  cli::Json probe_list = cli::Json::array();
  for (const auto& p : probes) {
    probe_list.push_back({{"driver", p.name},
                          {"usable", p.status.ok()},
                          {"reason", p.status.ok() ? "" : std::string(p.status.message())}});
  }
  j["drivers"] = probe_list;
  if (store.ok()) {
    graph::LayerStore* s = *store;
    j["driver"] = s->driver().Name();
    cli::Json st = cli::Json::object();
    for (const auto& [k, v] : s->driver().Status()) st[k] = v;
    j["driver_status"] = st;
    ASSIGN_OR_RETURN(auto counts, s->Counts());
    cli::Json c = cli::Json::object();
    for (const auto& [k, v] : counts) c[k] = v;
    j["layers"] = c;
  } else {
    j["error"] = std::string(store.status().message());
  }
  if (out.json) {
    cli::PrintJson(j);
  } else {
    std::cout << "Root: " << ctx.root << "\n";
    if (store.ok()) {
      std::cout << "Storage Driver: " << (*store)->driver().Name() << "\n";
      for (const auto& [k, v] : (*store)->driver().Status()) std::cout << " " << k << ": " << v << "\n";
      std::cout << "Layers:";
      for (auto it = j["layers"].begin(); it != j["layers"].end(); ++it) {
        std::cout << " " << it.key() << "=" << it.value().get<int64_t>();
      }
      std::cout << "\n";
    } else {
      std::cout << "Store: " << store.status().message() << "\n";
    }
    std::cout << "Drivers (priority order):\n";
    for (const auto& p : probes) {
      std::cout << "  " << p.name << ": " << (p.status.ok() ? "usable" : std::string(p.status.message()))
                << "\n";
    }
  }
  return store.ok() ? absl::OkStatus() : store.status();
}

absl::Status Check(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  bool repair = args.has("repair");
  if (args.has("prune") && !repair) return cli::UsageError("--prune goes with --repair");
  ASSIGN_OR_RETURN(graph::CheckReport report, store->Check(repair, args.has("prune")));
  bool clean = report.clean();
  if (repair && !clean) {
    ASSIGN_OR_RETURN(graph::CheckReport after, store->Check(false));
    clean = after.clean();
  }
  if (out.json) {
    cli::PrintJson({{"problems", report.problems},
                    {"repaired", report.repaired},
                    {"skipped", report.skipped},
                    {"clean", clean}});
  } else {
    for (const auto& p : report.problems) std::cout << "problem: " << base::EscapeForText(p) << "\n";
    for (const auto& p : report.repaired) std::cout << "repaired: " << base::EscapeForText(p) << "\n";
    for (const auto& p : report.skipped) std::cout << "skipped: " << base::EscapeForText(p) << "\n";
    if (report.clean()) std::cout << "ok: registry and driver agree\n";
  }
  if (clean) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(report.problems.size(), " problem(s)",
                                          repair ? " remain after repair" : "; run 'graphctl check --repair'"));
}

}  // namespace
}  // namespace graphctl

int main(int argc, char** argv) {
  using graphctl::Ctx;
  cli::App app("graphctl",
               "Container image and container layers: import OCI layer tarballs, create\n"
               "read-write container layers and read-only views, mount, diff, check.\n"
               "Driver options (--storage-opt, as dockerd's) are given each time the store\n"
               "is opened; e.g. devicemapper on a pool of sparse files, 4G per layer:\n"
               "  graphctl --driver devicemapper --storage-opt dm.loopdatasize=20G \\\n"
               "           --storage-opt dm.basesize=4G import base.tar\n"
               "Exit status: 0 ok, 1 failed, 2 usage.");
  app.AddGlobal({{"root", "DIR", "the layer store (default /var/lib/dmthin/graph)"},
                 [](const std::string& v) {
                   // Absolute at the edge: every path printed (mount, inspect) is absolute.
                   absl::StatusOr<std::string> abs = graph::AbsoluteRoot(v);
                   Ctx().root = abs.ok() ? *abs : v;
                 }});
  app.AddGlobal({{"driver", "NAME",
                  "overlay, btrfs, vfs, aufs, ... (default: the store's, else the first usable)"},
                 [](const std::string& v) { Ctx().driver = v; }});
  app.AddGlobal({{"storage-opt", "KEY=VAL",
                  "a driver option, repeatable: dm.basesize=20G, overlay.mount_api=legacy, ...", true},
                 [](const std::string& v) { Ctx().storage_opts.push_back(v); }});
  cli::Option label{"label", "KEY=VALUE", "attach a label (repeatable)", true};
  app.AddVerb({"import", {"TAR"}, {{"parent", "CHAINID", "image layer this one sits on"}, label},
               "import an OCI layer tar (plain/gzip/zstd; - for stdin); prints the chain id",
               "Applies the tarball as a new image layer on --parent and prints its chain id\n"
               "(sha256 of parent chain id + \" \" + diff id). Importing a layer that exists\n"
               "takes another reference to it.\n\n"
               "  graphctl import base.tar\n  zstd -dc app.tar.zst | graphctl import --parent sha256:... -",
               graphctl::Import});
  app.AddVerb({"create", {"ID"},
               {{"parent", "ID", "committed or imported layer to build on"},
                {"rw", "", "read-write container layer (with an init layer), not a view"},
                {"no-init", "", "with --rw: no init layer (a containerd-style active snapshot)"},
                label},
               "create a container layer (--rw) or a read-only view named ID",
               "", graphctl::Create});
  app.AddVerb({"commit", {"ID", "NAME"}, {label}, "turn read-write layer ID into committed layer NAME",
               "", graphctl::Commit});
  app.AddVerb({"mount", {"ID"}, {}, "mount layer ID and print the directory", "", graphctl::Mount});
  app.AddVerb({"umount", {"ID"}, {}, "drop a mount taken by 'mount'", "", graphctl::Umount});
  app.AddVerb({"diff", {"ID"}, {{"o", "FILE", "write to FILE (atomically) instead of stdout"}},
               "write layer ID's changes as an OCI layer tar; prints the diff id", "", graphctl::Diff});
  app.AddVerb({"changes", {"ID"}, {}, "list layer ID's changes (A added, C changed, D deleted)", "",
               graphctl::Changes});
  app.AddVerb({"rm", {"ID"}, {{"force", "", "remove even while mounted (pulls it from under its users)"}},
               "drop a reference to layer ID; the last one removes it",
               "A mounted layer (graphctl mount, in any process) is refused until each mount\n"
               "is dropped with 'graphctl umount ID'; --force removes it anyway.",
               graphctl::Remove});
  app.AddVerb({"ls", {}, {}, "list layers", "", graphctl::List});
  app.AddVerb({"inspect", {"ID"}, {}, "layer ID as JSON, with the driver's data and mounts", "",
               graphctl::Inspect});
  app.AddVerb({"status", {}, {}, "the store's driver, its status and what every driver needs", "",
               graphctl::Status});
  app.AddVerb({"check", {}, {{"repair", "", "reap interrupted operations, drop records whose data is gone"},
                             {"prune", "", "with --repair: also delete driver layers no record owns"}},
               "compare registry and driver; exit 1 while problems remain", "", graphctl::Check});
  return app.Main(argc, argv);
}
