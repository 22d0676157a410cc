// graphctl's verbs on one layer: import, create, commit, label, mount,
// umount, diff, changes, usage, inspect, rm.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/size.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "base/utf8.h"
#include "graph/stream.h"
#include "tools/graphctl/context.h"

namespace graphctl {
namespace {

absl::Status Import(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto labels, LabelOptions(args));
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
  options.labels = std::move(labels);
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
  PrintLayer(*layer, out);
  return absl::OkStatus();
}

absl::Status Create(const cli::Args& args, const cli::Output& out) {
  if (args.has("no-init") && !args.has("rw")) return cli::UsageError("--no-init goes with --rw");
  graph::CreateLayerOptions options;
  ASSIGN_OR_RETURN(options.labels, LabelOptions(args));
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  if (args.has("rw")) {
    options.kind = graph::LayerKind::kActive;
    options.init_layer = !args.has("no-init");
  } else {
    options.kind = graph::LayerKind::kView;
  }
  ASSIGN_OR_RETURN(graph::LayerInfo layer,
                   store->Create(args.positional(0), args.get("parent").value_or(""), options));
  PrintLayer(layer, out);
  return absl::OkStatus();
}

absl::Status Commit(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(auto labels, LabelOptions(args));
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  ASSIGN_OR_RETURN(graph::LayerInfo layer, store->Commit(args.positional(1), args.positional(0), labels));
  PrintLayer(layer, out);
  return absl::OkStatus();
}

// containerd's Update with "labels.KEY" field paths, as `ctr snapshots
// label` does it: KEY=VALUE sets, KEY= clears, other labels stay. Without
// words it shows the labels.
absl::Status Label(const cli::Args& args, const cli::Output& out) {
  std::vector<std::string> words;
  for (size_t i = 1; i < args.positional_count(); ++i) words.push_back(args.positional(i));
  ASSIGN_OR_RETURN(LabelEdit edit, ParseLabelEdit(words));
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  const std::string& name = args.positional(0);
  ASSIGN_OR_RETURN(graph::LayerInfo layer, edit.field_paths.empty()
                                               ? store->Stat(name)
                                               : store->Update(name, edit.set, edit.field_paths));
  if (out.json) {
    cli::PrintJson(LayerJson(layer));
  } else {
    for (const auto& [k, v] : layer.labels) {
      std::cout << base::EscapeForText(k) << "=" << base::EscapeForText(v) << "\n";
    }
  }
  return absl::OkStatus();
}

absl::Status Mount(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  std::string dir;
  if (std::optional<std::string> at = args.get("ro")) {
    ASSIGN_OR_RETURN(dir, graph::AbsoluteRoot(*at));
    RETURN_IF_ERROR(store->MountReadOnly(args.positional(0), dir));
  } else {
    ASSIGN_OR_RETURN(dir, store->Mount(args.positional(0)));
  }
  if (out.json) {
    cli::PrintJson(cli::Json{{"name", args.positional(0)}, {"path", dir}});
  } else {
    std::cout << dir << "\n";
  }
  return absl::OkStatus();
}

absl::Status Umount(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  const std::string& name = args.positional(0);
  cli::Json j{{"name", name}, {"unmounted", true}};
  if (std::optional<std::string> at = args.get("ro")) {
    ASSIGN_OR_RETURN(std::string dir, graph::AbsoluteRoot(*at));
    RETURN_IF_ERROR(store->UnmountReadOnly(name, dir));
    j["ro"] = dir;
  } else {
    RETURN_IF_ERROR(store->Unmount(name));
  }
  if (out.json) cli::PrintJson(j);
  return absl::OkStatus();
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

// containerd's Usage: what the layer itself takes, measured now, for every
// kind of layer.
absl::Status Usage(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  const std::string& name = args.positional(0);
  ASSIGN_OR_RETURN(graph::DiskUsage usage, store->Usage(name));
  if (out.json) {
    cli::PrintJson(cli::Json{{"name", name}, {"bytes", usage.bytes}, {"inodes", usage.inodes}});
  } else {
    std::cout << base::FormatSize(static_cast<uint64_t>(usage.bytes)) << " (" << usage.bytes << " bytes), "
              << usage.inodes << (usage.inodes == 1 ? " inode" : " inodes") << "\n";
  }
  return absl::OkStatus();
}

absl::Status Remove(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  const std::string& name = args.positional(0);
  graph::RemoveOptions options;
  options.force = args.has("force");
  RETURN_IF_ERROR(store->Remove(name, options));
  if (!out.json) return absl::OkStatus();
  // rm drops one reference: say whether the layer went, or how many remain.
  absl::StatusOr<graph::LayerInfo> left = store->Stat(name);
  if (!left.ok() && !absl::IsNotFound(left.status())) return left.status();
  cli::Json j{{"name", name}, {"removed", !left.ok()}};
  if (left.ok()) j["references"] = left->refs;
  cli::PrintJson(j);
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

}  // namespace

void AddLayerVerbs(cli::App& app) {
  cli::Option label{"label", "KEY=VALUE", "attach a label (repeatable; key + value <= 4096 bytes)", true};
  app.AddVerb({"import", {"TAR"}, {{"parent", "CHAINID", "image layer this one sits on"}, label},
               "import an OCI layer tar (plain/gzip/zstd; - for stdin); prints the chain id",
               "Applies the tarball as a new image layer on --parent and prints its chain id\n"
               "(sha256 of parent chain id + \" \" + diff id). Importing a layer that exists\n"
               "takes another reference to it.\n\n"
               "  graphctl import base.tar\n  zstd -dc app.tar.zst | graphctl import --parent sha256:... -",
               Import});
  app.AddVerb({"create", {"ID"},
               {{"parent", "ID", "committed or imported layer to build on"},
                {"rw", "", "read-write container layer (with an init layer), not a view"},
                {"no-init", "", "with --rw: no init layer (a containerd-style active snapshot)"},
                label},
               "create a container layer (--rw) or a read-only view named ID",
               "", Create});
  app.AddVerb({"commit", {"ID", "NAME"}, {label}, "turn read-write layer ID into committed layer NAME",
               "", Commit});
  app.AddVerb({"label", {"ID", "[KEY=VALUE|KEY=]..."}, {},
               "set (KEY=VALUE) or clear (KEY=) labels of layer ID; prints its labels",
               "containerd's Update with field paths labels.KEY (as 'ctr snapshots label'):\n"
               "each KEY=VALUE sets a label, each KEY= clears one, the others stay. A label's\n"
               "key and value together are at most 4096 bytes of UTF-8 (containerd's limit),\n"
               "checked before the store is touched. Without KEY words it shows the labels.\n\n"
               "  graphctl label web containerd.io/gc.root=2026-11-30 team=web\n"
               "  graphctl label web team=",
               Label});
  app.AddVerb({"mount", {"ID"}, {{"ro", "DIR", "mount the view read-only at DIR (an existing directory)"}},
               "mount layer ID and print the directory",
               "With --ro DIR the layer's view is bound read-only at DIR, e.g. to look into a\n"
               "stopped container's layer (dmthin-docker-plugin: the layer docker inspect's\n"
               "GraphDriver.Data names, see docs/docker.md); 'graphctl umount ID --ro DIR'\n"
               "undoes it. The layer cannot be removed while it is mounted.",
               Mount});
  app.AddVerb({"umount", {"ID"}, {{"ro", "DIR", "undo 'mount --ro DIR'"}}, "drop a mount taken by 'mount'", "",
               Umount});
  app.AddVerb({"diff", {"ID"}, {{"o", "FILE", "write to FILE (atomically) instead of stdout"}},
               "write layer ID's changes as an OCI layer tar; prints the diff id", "", Diff});
  app.AddVerb({"changes", {"ID"}, {}, "list layer ID's changes (A added, C changed, D deleted)", "", Changes});
  app.AddVerb({"usage", {"ID"}, {}, "disk space and inodes layer ID itself takes (any kind, active too)",
               "containerd's Usage: allocated bytes and distinct inodes of the layer's own\n"
               "data, not its parents', measured now (a tree walk for overlay, vfs, btrfs and\n"
               "aufs; mapped blocks for devicemapper).",
               Usage});
  app.AddVerb({"rm", {"ID"}, {{"force", "", "remove even while mounted (pulls it from under its users)"}},
               "drop a reference to layer ID; the last one removes it",
               "A mounted layer (graphctl mount, in any process) is refused until each mount\n"
               "is dropped with 'graphctl umount ID'; --force removes it anyway.",
               Remove});
  app.AddVerb({"inspect", {"ID"}, {}, "layer ID as JSON, with the driver's data and mounts", "", Inspect});
}

}  // namespace graphctl
