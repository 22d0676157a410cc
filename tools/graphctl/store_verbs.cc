// graphctl's verbs on the whole store: ls (with containerd's filters),
// status, check.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "base/size.h"
#include "base/status.h"
#include "base/utf8.h"
#include "graph/driver.h"
#include "tools/graphctl/context.h"

namespace graphctl {
namespace {

absl::Status List(const cli::Args& args, const cli::Output& out) {
  ASSIGN_OR_RETURN(graph::Filter filter, FilterOptions(args));
  ASSIGN_OR_RETURN(graph::LayerStore * store, Ctx().Store());
  // Each layer is turned into its row (or JSON) as Walk hands it over: no
  // copy of every LayerInfo first.
  if (out.json) {
    cli::Json list = cli::Json::array();
    RETURN_IF_ERROR(store->Walk(filter, [&](const graph::LayerInfo& l) {
      list.push_back(LayerJson(l));
      return absl::OkStatus();
    }));
    cli::PrintJson(list);
    return absl::OkStatus();
  }
  cli::Table table({"NAME", "KIND", "PARENT", "SIZE", "REFS", "CREATED", "UPDATED", "LABELS"}, {3, 4});
  RETURN_IF_ERROR(store->Walk(filter, [&](const graph::LayerInfo& l) {
    std::string created = Time(l.created);
    std::string updated = l.updated == l.created ? created : Time(l.updated);
    table.Add({Short(l.name), graph::LayerKindName(l.kind), l.parent.empty() ? "-" : Short(l.parent),
               l.diff_id.empty() ? "-" : base::FormatSize(static_cast<uint64_t>(l.size)),
               std::to_string(l.refs), std::move(created), std::move(updated), LabelsText(l.labels)});
    return absl::OkStatus();
  }));
  std::cout << table.Render();
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

void AddStoreVerbs(cli::App& app) {
  app.AddVerb({"ls", {},
               {{"filter", "EXPR", "only layers the filter matches (containerd's syntax; repeatable: any matches)",
                 true}},
               "list layers (name, kind, parent, size, references, times, labels)",
               "Filters are containerd's (ctr snapshots ls --filter): fields name, parent,\n"
               "kind (committed, active, view) and labels.KEY (labels.\"a.b\" for dotted keys);\n"
               "operators == != and ~= (RE2 regexp); no operator: the field is present;\n"
               "',' joins selectors that must all match, '|' separates alternatives, and\n"
               "--filter repeated matches a layer any of them matches. A filter that does\n"
               "not parse is a usage error (exit 2) naming the byte where it fails.\n\n"
               "  graphctl ls --filter kind==committed\n"
               "  graphctl ls --filter 'labels.\"containerd.io/gc.root\",kind==active'\n"
               "  graphctl ls --filter 'name~=/^web/|parent==base' --filter labels.team==db",
               List});
  app.AddVerb({"status", {}, {}, "the store's driver, its status and what every driver needs", "", Status});
  app.AddVerb({"check", {}, {{"repair", "", "reap interrupted operations, drop records whose data is gone"},
                             {"prune", "", "with --repair: also delete driver layers no record owns"}},
               "compare registry and driver; exit 1 while problems remain", "", Check});
}

}  // namespace graphctl
