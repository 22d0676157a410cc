// The C ABI (graph/include/graph.h) over graph::LayerStore.
#include "graph.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/status.h"
#include "graph/driver.h"
#include "graph/store.h"
#include "graph/stream.h"

struct graph_store {
  std::unique_ptr<graph::LayerStore> store;
  std::string driver_name;
  std::mutex mu;                      // guards `mounts` (the store itself is thread-safe)
  std::map<std::string, int> mounts;  // what this handle mounted
};

struct graph_labels {
  std::map<std::string, std::string> labels;
};

struct graph_create_options {
  graph::CreateLayerOptions options;
};

namespace {

thread_local std::string last_error;

// Open store handles: a call with a handle not in here (closed, or never
// opened) fails with GRAPH_EINVAL instead of touching freed memory.
std::mutex live_mu;
std::set<const graph_store*>& Live() {
  static auto* live = new std::set<const graph_store*>;
  return *live;
}
bool IsLive(const graph_store* store) {
  std::lock_guard<std::mutex> l(live_mu);
  return store != nullptr && Live().count(store) != 0;
}

int Fail(int code, std::string message) {
  last_error = std::move(message);
  return code;
}

int FromStatus(const absl::Status& s) {
  if (s.ok()) {
    last_error.clear();
    return GRAPH_OK;
  }
  int code = GRAPH_EIO;
  if (base::HasErrno(s, EBUSY)) return Fail(GRAPH_EBUSY, std::string(s.message()));
  if (base::HasErrno(s, ENOSPC) || base::HasErrno(s, EDQUOT)) return Fail(GRAPH_ENOSPC, std::string(s.message()));
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      code = GRAPH_EINVAL;
      break;
    case absl::StatusCode::kNotFound:
      code = GRAPH_ENOTFOUND;
      break;
    case absl::StatusCode::kAlreadyExists:
      code = GRAPH_EEXIST;
      break;
    case absl::StatusCode::kFailedPrecondition:
      code = graph::GetUnsupported(s).has_value() ? GRAPH_EUNSUPPORTED : GRAPH_EPRECONDITION;
      break;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      code = GRAPH_EPERM;
      break;
    case absl::StatusCode::kDataLoss:
      code = GRAPH_EDATA;
      break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
      code = GRAPH_EBUSY;
      break;
    case absl::StatusCode::kResourceExhausted:
      code = GRAPH_ENOSPC;
      break;
    case absl::StatusCode::kUnimplemented:
      code = GRAPH_EUNSUPPORTED;
      break;
    default:
      code = GRAPH_EIO;
  }
  return Fail(code, std::string(s.message()));
}

char* Dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p != nullptr) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// graph_store_open_opts's "key=value" array, checked for form only (the
// driver checks keys and values): GRAPH_OK or GRAPH_EINVAL naming the entry.
struct ParsedOptions {
  std::map<std::string, std::string> options;
  std::string given;  // "k=v k=v", for messages
};

int ParseDriverOptions(const char* const* options, ParsedOptions* out) {
  for (size_t i = 0; options != nullptr && options[i] != nullptr; ++i) {
    std::string kv = options[i];
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      return Fail(GRAPH_EINVAL, absl::StrCat("graph_store_open_opts: options[", i, "] \"", kv,
                                             "\" is not key=value (e.g. dm.basesize=20G)"));
    }
    if (eq == 0) {
      return Fail(GRAPH_EINVAL,
                  absl::StrCat("graph_store_open_opts: options[", i, "] \"", kv, "\" has an empty key"));
    }
    auto [it, added] = out->options.emplace(kv.substr(0, eq), kv.substr(eq + 1));
    if (!added) {
      return Fail(GRAPH_EINVAL, absl::StrCat("graph_store_open_opts: option ", it->first, " given twice (\"",
                                             it->first, "=", it->second, "\" and \"", kv, "\")"));
    }
    absl::StrAppend(&out->given, out->given.empty() ? "" : " ", kv);
  }
  return GRAPH_OK;
}

#define CHECK_ARG(cond, what) \
  if (!(cond)) return Fail(GRAPH_EINVAL, what)

#define CHECK_STORE(store, fn)                                                    \
  if (!IsLive(store)) {                                                           \
    return Fail(GRAPH_EINVAL, absl::StrCat(fn, ": ", (store) == nullptr ? "store is NULL" \
                                           : "stale or unknown store handle"));   \
  }

#define GUARDED(body)                                        \
  try {                                                      \
    body                                                     \
  } catch (const std::bad_alloc&) {                          \
    return Fail(GRAPH_ENOMEM, "out of memory");              \
  } catch (const std::exception& e) {                        \
    return Fail(GRAPH_EIO, absl::StrCat("internal error: ", e.what())); \
  }

// (A name without commas: it appears inside GUARDED's macro argument.)
using Labels = std::map<std::string, std::string>;

void FillInfo(const graph::LayerInfo& l, graph_layer_info* out) {
  out->name = Dup(l.name);
  out->kind = Dup(graph::LayerKindName(l.kind));
  out->parent = Dup(l.parent);
  out->cache_id = Dup(l.cache_id);
  out->diff_id = Dup(l.diff_id);
  out->chain_id = Dup(l.chain_id);
  out->size = l.size;
  out->refs = l.refs;
  out->children = l.children;
  out->created_unix_nanos = absl::ToUnixNanos(l.created);
  out->updated_unix_nanos = absl::ToUnixNanos(l.updated);
  out->label_count = l.labels.size();
  out->label_keys = static_cast<char**>(std::calloc(l.labels.size() + 1, sizeof(char*)));
  out->label_values = static_cast<char**>(std::calloc(l.labels.size() + 1, sizeof(char*)));
  if (out->label_keys == nullptr || out->label_values == nullptr) throw std::bad_alloc();
  size_t i = 0;
  for (const auto& [k, v] : l.labels) {
    out->label_keys[i] = Dup(k);
    out->label_values[i] = Dup(v);
    ++i;
  }
}

void FreeInfoFields(graph_layer_info* info) {
  for (char* p : {info->name, info->kind, info->parent, info->cache_id, info->diff_id,
                  info->chain_id}) {
    std::free(p);
  }
  for (size_t i = 0; i < info->label_count; ++i) {
    if (info->label_keys != nullptr) std::free(info->label_keys[i]);
    if (info->label_values != nullptr) std::free(info->label_values[i]);
  }
  std::free(info->label_keys);
  std::free(info->label_values);
}

// A malloc'd array of described mounts.
int ReturnMounts(const std::vector<graph::MountSpec>& specs, graph_mount_desc** mounts,
                 size_t* count) {
  if (mounts == nullptr) {
    if (count != nullptr) *count = specs.size();
    return FromStatus(absl::OkStatus());
  }
  auto* out = static_cast<graph_mount_desc*>(std::calloc(specs.size() + 1, sizeof(graph_mount_desc)));
  if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
  for (size_t i = 0; i < specs.size(); ++i) {
    out[i].type = Dup(specs[i].type);
    out[i].source = Dup(specs[i].source);
    out[i].target = Dup(specs[i].target);
    out[i].option_count = specs[i].options.size();
    out[i].options = static_cast<char**>(std::calloc(specs[i].options.size() + 1, sizeof(char*)));
    for (size_t j = 0; out[i].options != nullptr && j < specs[i].options.size(); ++j) {
      out[i].options[j] = Dup(specs[i].options[j]);
    }
  }
  *mounts = out;
  if (count != nullptr) *count = specs.size();
  return FromStatus(absl::OkStatus());
}

}  // namespace

extern "C" {

const char* graph_strerror(int code) {
  switch (code) {
    case GRAPH_OK: return "success";
    case GRAPH_EINVAL: return "invalid argument";
    case GRAPH_ENOTFOUND: return "not found";
    case GRAPH_EEXIST: return "already exists";
    case GRAPH_EPRECONDITION: return "failed precondition";
    case GRAPH_EUNSUPPORTED: return "not supported here";
    case GRAPH_EPERM: return "permission denied";
    case GRAPH_EDATA: return "corrupt or rejected data";
    case GRAPH_EBUSY: return "busy";
    case GRAPH_ENOSPC: return "no space left";
    case GRAPH_EIO: return "I/O or internal error";
    case GRAPH_ENOMEM: return "out of memory";
    default: return "unknown error";
  }
}

const char* graph_last_error(void) { return last_error.c_str(); }

const char* graph_version(void) { return "0.1.0"; }

void graph_free(void* p) { std::free(p); }

int graph_store_open(const char* root, const char* driver, graph_store** out) {
  return graph_store_open_opts(root, driver, nullptr, out);
}

int graph_store_open_opts(const char* root, const char* driver, const char* const* options,
                          graph_store** out) {
  CHECK_ARG(root != nullptr && *root != '\0', "graph_store_open: root is required");
  CHECK_ARG(out != nullptr, "graph_store_open: out is NULL");
  *out = nullptr;
  GUARDED({
    ParsedOptions parsed;
    if (int rc = ParseDriverOptions(options, &parsed); rc != GRAPH_OK) return rc;
    absl::StatusOr<std::unique_ptr<graph::LayerStore>> store =
        graph::OpenLayerStore(root, driver == nullptr ? "" : driver, parsed.options);
    if (!store.ok()) {
      if (store.status().code() == absl::StatusCode::kInvalidArgument && !parsed.given.empty()) {
        // The driver refused an option: name the ones it was given.
        return FromStatus(absl::InvalidArgumentError(
            absl::StrCat("with options ", parsed.given, ": ", store.status().message())));
      }
      return FromStatus(store.status());
    }
    auto* handle = new graph_store;
    handle->driver_name = (*store)->driver().Name();
    handle->store = std::move(*store);
    {
      std::lock_guard<std::mutex> l(live_mu);
      Live().insert(handle);
    }
    *out = handle;
    return FromStatus(absl::OkStatus());
  })
}

void graph_store_close(graph_store* store) {
  {
    std::lock_guard<std::mutex> l(live_mu);
    if (store == nullptr || Live().erase(store) == 0) return;  // NULL, or closed already
  }
  try {
    for (auto& [name, n] : store->mounts) {
      while (n-- > 0) (void)store->store->Unmount(name);
    }
  } catch (...) {
  }
  delete store;
}

const char* graph_store_driver(const graph_store* store) {
  return IsLive(store) ? store->driver_name.c_str() : "";
}

int graph_import_fd(graph_store* store, int fd, const char* parent, char** chain_id) {
  CHECK_STORE(store, "graph_import_fd");
  CHECK_ARG(store != nullptr, "graph_import_fd: store is NULL");
  GUARDED({
    if (absl::Status s = graph::FdSource::Check(fd); !s.ok()) {
      return FromStatus(base::Annotate(s, "graph_import_fd"));
    }
    graph::FdSource source(fd);
    graph::ImportOptions options;
    if (parent != nullptr) options.parent = parent;
    absl::StatusOr<graph::LayerInfo> layer = store->store->Import(source, options);
    if (!layer.ok()) return FromStatus(layer.status());
    if (chain_id != nullptr) *chain_id = Dup(layer->name);
    return FromStatus(absl::OkStatus());
  })
}

int graph_create(graph_store* store, const char* name, const char* parent, int flags) {
  CHECK_STORE(store, "graph_create");
  CHECK_ARG(store != nullptr && name != nullptr, "graph_create: store and name are required");
  int kind = flags & 0x0f;
  CHECK_ARG(kind == GRAPH_LAYER_ACTIVE || kind == GRAPH_LAYER_VIEW,
            "graph_create: flags must be GRAPH_LAYER_ACTIVE or GRAPH_LAYER_VIEW");
  CHECK_ARG((flags & ~(0x0f | GRAPH_CREATE_INIT)) == 0, "graph_create: unknown flags");
  GUARDED({
    graph::CreateLayerOptions options;
    options.kind = kind == GRAPH_LAYER_VIEW ? graph::LayerKind::kView : graph::LayerKind::kActive;
    options.init_layer = (flags & GRAPH_CREATE_INIT) != 0;
    return FromStatus(
        store->store->Create(name, parent == nullptr ? "" : parent, options).status());
  })
}

int graph_commit(graph_store* store, const char* name, const char* key) {
  CHECK_STORE(store, "graph_commit");
  CHECK_ARG(store != nullptr && name != nullptr && key != nullptr,
            "graph_commit: store, name and key are required");
  GUARDED({ return FromStatus(store->store->Commit(name, key).status()); })
}

int graph_remove(graph_store* store, const char* name) { return graph_remove_flags(store, name, 0); }

int graph_remove_flags(graph_store* store, const char* name, int flags) {
  CHECK_STORE(store, "graph_remove_flags");
  CHECK_ARG(store != nullptr && name != nullptr, "graph_remove: store and name are required");
  CHECK_ARG((flags & ~GRAPH_REMOVE_FORCE) == 0, "graph_remove: unknown flags");
  GUARDED({
    graph::RemoveOptions options;
    options.force = (flags & GRAPH_REMOVE_FORCE) != 0;
    absl::Status s = store->store->Remove(name, options);
    if (s.ok() && options.force) {
      std::lock_guard<std::mutex> l(store->mu);
      store->mounts.erase(name);  // nothing left to unmount at close
    }  // nothing left to unmount at close
    return FromStatus(s);
  })
}

int graph_mount(graph_store* store, const char* name, char** path) {
  CHECK_STORE(store, "graph_mount");
  CHECK_ARG(store != nullptr && name != nullptr && path != nullptr,
            "graph_mount: store, name and path are required");
  GUARDED({
    absl::StatusOr<std::string> dir = store->store->Mount(name);
    if (!dir.ok()) return FromStatus(dir.status());
    {
      std::lock_guard<std::mutex> l(store->mu);
      store->mounts[name]++;
    }
    *path = Dup(*dir);
    return FromStatus(absl::OkStatus());
  })
}

int graph_umount(graph_store* store, const char* name) {
  CHECK_STORE(store, "graph_umount");
  CHECK_ARG(store != nullptr && name != nullptr, "graph_umount: store and name are required");
  GUARDED({
    absl::Status s = store->store->Unmount(name);
    if (s.ok()) {
      std::lock_guard<std::mutex> l(store->mu);
      auto it = store->mounts.find(name);
      if (it != store->mounts.end() && --it->second <= 0) store->mounts.erase(it);
    }
    return FromStatus(s);
  })
}

int graph_diff_fd(graph_store* store, const char* name, int fd, char** diff_id) {
  CHECK_STORE(store, "graph_diff_fd");
  CHECK_ARG(store != nullptr && name != nullptr, "graph_diff_fd: store and name are required");
  GUARDED({
    if (absl::Status s = graph::FdSink::Check(fd); !s.ok()) {
      return FromStatus(base::Annotate(s, "graph_diff_fd"));
    }
    graph::FdSink sink(fd);
    absl::StatusOr<graph::DiffResult> r = store->store->Diff(name, sink);
    if (!r.ok()) return FromStatus(r.status());
    if (diff_id != nullptr) *diff_id = Dup(r->diff_id);
    return FromStatus(absl::OkStatus());
  })
}

int graph_changes(graph_store* store, const char* name, graph_change** changes, size_t* count) {
  CHECK_STORE(store, "graph_changes");
  CHECK_ARG(store != nullptr && name != nullptr && changes != nullptr && count != nullptr,
            "graph_changes: store, name, changes and count are required");
  *changes = nullptr;
  *count = 0;
  GUARDED({
    absl::StatusOr<std::vector<graph::Change>> list = store->store->Changes(name);
    if (!list.ok()) return FromStatus(list.status());
    auto* out = static_cast<graph_change*>(std::calloc(list->size() + 1, sizeof(graph_change)));
    if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
    for (size_t i = 0; i < list->size(); ++i) {
      out[i].path = Dup((*list)[i].path);
      out[i].kind = static_cast<int>((*list)[i].kind);
    }
    *changes = out;
    *count = list->size();
    return FromStatus(absl::OkStatus());
  })
}

void graph_changes_free(graph_change* changes, size_t count) {
  if (changes == nullptr) return;
  for (size_t i = 0; i < count; ++i) std::free(changes[i].path);
  std::free(changes);
}

int graph_layer_stat(graph_store* store, const char* name, graph_layer_info** info) {
  CHECK_STORE(store, "graph_layer_stat");
  CHECK_ARG(store != nullptr && name != nullptr && info != nullptr,
            "graph_layer_stat: store, name and info are required");
  *info = nullptr;
  GUARDED({
    absl::StatusOr<graph::LayerInfo> l = store->store->Stat(name);
    if (!l.ok()) return FromStatus(l.status());
    auto* out = static_cast<graph_layer_info*>(std::calloc(1, sizeof(graph_layer_info)));
    if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
    FillInfo(*l, out);
    *info = out;
    return FromStatus(absl::OkStatus());
  })
}

void graph_layer_info_free(graph_layer_info* info) {
  if (info == nullptr) return;
  FreeInfoFields(info);
  std::free(info);
}

int graph_list(graph_store* store, char*** names, size_t* count) {
  CHECK_STORE(store, "graph_list");
  CHECK_ARG(store != nullptr && names != nullptr && count != nullptr,
            "graph_list: store, names and count are required");
  *names = nullptr;
  *count = 0;
  GUARDED({
    absl::StatusOr<std::vector<graph::LayerInfo>> list = store->store->List();
    if (!list.ok()) return FromStatus(list.status());
    auto** out = static_cast<char**>(std::calloc(list->size() + 1, sizeof(char*)));
    if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
    for (size_t i = 0; i < list->size(); ++i) out[i] = Dup((*list)[i].name);
    *names = out;
    *count = list->size();
    return FromStatus(absl::OkStatus());
  })
}

void graph_strings_free(char** strings, size_t count) {
  if (strings == nullptr) return;
  for (size_t i = 0; i < count; ++i) std::free(strings[i]);
  std::free(strings);
}

int graph_check(graph_store* store, int repair, size_t* problems, char** report) {
  CHECK_STORE(store, "graph_check");
  CHECK_ARG(store != nullptr, "graph_check: store is NULL");
  GUARDED({
    absl::StatusOr<graph::CheckReport> r =
        store->store->Check(repair != 0, (repair & GRAPH_CHECK_PRUNE) != 0);
    if (!r.ok()) return FromStatus(r.status());
    if (problems != nullptr) *problems = r->problems.size();
    if (report != nullptr) {
      std::string text;
      for (const std::string& p : r->problems) absl::StrAppend(&text, "problem: ", p, "\n");
      for (const std::string& p : r->repaired) absl::StrAppend(&text, "repaired: ", p, "\n");
      for (const std::string& p : r->skipped) absl::StrAppend(&text, "skipped: ", p, "\n");
      *report = Dup(text);
    }
    return FromStatus(absl::OkStatus());
  })
}

graph_labels* graph_labels_new(void) { return new (std::nothrow) graph_labels; }

void graph_labels_free(graph_labels* labels) { delete labels; }

int graph_labels_set(graph_labels* labels, const char* key, const char* value) {
  CHECK_ARG(labels != nullptr && key != nullptr, "graph_labels_set: labels and key are required");
  GUARDED({
    if (value == nullptr) {
      labels->labels.erase(key);
    } else {
      labels->labels[key] = value;
    }
    return FromStatus(absl::OkStatus());
  })
}

graph_create_options* graph_create_options_new(void) { return new (std::nothrow) graph_create_options; }

void graph_create_options_free(graph_create_options* options) { delete options; }

int graph_create_options_set_kind(graph_create_options* options, int kind) {
  CHECK_ARG(options != nullptr, "graph_create_options_set_kind: options is NULL");
  CHECK_ARG(kind == GRAPH_LAYER_ACTIVE || kind == GRAPH_LAYER_VIEW,
            "graph_create_options_set_kind: kind must be GRAPH_LAYER_ACTIVE or GRAPH_LAYER_VIEW");
  options->options.kind = kind == GRAPH_LAYER_VIEW ? graph::LayerKind::kView : graph::LayerKind::kActive;
  return FromStatus(absl::OkStatus());
}

int graph_create_options_set_init_layer(graph_create_options* options, int init_layer) {
  CHECK_ARG(options != nullptr, "graph_create_options_set_init_layer: options is NULL");
  options->options.init_layer = init_layer != 0;
  return FromStatus(absl::OkStatus());
}

int graph_create_options_set_labels(graph_create_options* options, const graph_labels* labels) {
  CHECK_ARG(options != nullptr, "graph_create_options_set_labels: options is NULL");
  GUARDED({
    options->options.labels = labels == nullptr ? Labels() : labels->labels;
    return FromStatus(absl::OkStatus());
  })
}

void graph_mounts_free(graph_mount_desc* mounts, size_t count) {
  if (mounts == nullptr) return;
  for (size_t i = 0; i < count; ++i) {
    std::free(mounts[i].type);
    std::free(mounts[i].source);
    std::free(mounts[i].target);
    for (size_t j = 0; mounts[i].options != nullptr && j < mounts[i].option_count; ++j) {
      std::free(mounts[i].options[j]);
    }
    std::free(mounts[i].options);
  }
  std::free(mounts);
}

int graph_prepare(graph_store* store, const char* key, const char* parent,
                  const graph_create_options* options, graph_mount_desc** mounts, size_t* count) {
  CHECK_STORE(store, "graph_prepare");
  CHECK_ARG(key != nullptr, "graph_prepare: key is required");
  if (mounts != nullptr) *mounts = nullptr;
  if (count != nullptr) *count = 0;
  GUARDED({
    graph::CreateLayerOptions opts = options == nullptr ? graph::CreateLayerOptions() : options->options;
    absl::StatusOr<graph::LayerInfo> l = store->store->Create(key, parent == nullptr ? "" : parent, opts);
    if (!l.ok()) return FromStatus(l.status());
    if (mounts == nullptr && count == nullptr) return FromStatus(absl::OkStatus());
    absl::StatusOr<std::vector<graph::MountSpec>> specs = store->store->Mounts(key);
    if (!specs.ok()) return FromStatus(specs.status());
    return ReturnMounts(*specs, mounts, count);
  })
}

int graph_mounts(graph_store* store, const char* name, graph_mount_desc** mounts, size_t* count) {
  CHECK_STORE(store, "graph_mounts");
  CHECK_ARG(name != nullptr && mounts != nullptr && count != nullptr,
            "graph_mounts: name, mounts and count are required");
  *mounts = nullptr;
  *count = 0;
  GUARDED({
    absl::StatusOr<std::vector<graph::MountSpec>> specs = store->store->Mounts(name);
    if (!specs.ok()) return FromStatus(specs.status());
    return ReturnMounts(*specs, mounts, count);
  })
}

int graph_commit_labels(graph_store* store, const char* name, const char* key,
                        const graph_labels* labels) {
  CHECK_STORE(store, "graph_commit_labels");
  CHECK_ARG(name != nullptr && key != nullptr, "graph_commit_labels: name and key are required");
  GUARDED({
    return FromStatus(
        store->store->Commit(name, key, labels == nullptr ? Labels() : labels->labels)
            .status());
  })
}

int graph_update(graph_store* store, const char* name, const graph_labels* labels,
                 const char* const* field_paths, graph_layer_info** info) {
  CHECK_STORE(store, "graph_update");
  CHECK_ARG(name != nullptr, "graph_update: name is required");
  if (info != nullptr) *info = nullptr;
  GUARDED({
    std::vector<std::string> paths;
    for (size_t i = 0; field_paths != nullptr && field_paths[i] != nullptr; ++i) paths.push_back(field_paths[i]);
    absl::StatusOr<graph::LayerInfo> l = store->store->Update(
        name, labels == nullptr ? Labels() : labels->labels, paths);
    if (!l.ok()) return FromStatus(l.status());
    if (info != nullptr) {
      auto* out = static_cast<graph_layer_info*>(std::calloc(1, sizeof(graph_layer_info)));
      if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
      FillInfo(*l, out);
      *info = out;
    }
    return FromStatus(absl::OkStatus());
  })
}

int graph_usage(graph_store* store, const char* name, int64_t* bytes, int64_t* inodes) {
  CHECK_STORE(store, "graph_usage");
  CHECK_ARG(name != nullptr, "graph_usage: name is required");
  GUARDED({
    absl::StatusOr<graph::DiskUsage> u = store->store->Usage(name);
    if (!u.ok()) return FromStatus(u.status());
    if (bytes != nullptr) *bytes = u->bytes;
    if (inodes != nullptr) *inodes = u->inodes;
    return FromStatus(absl::OkStatus());
  })
}

int graph_walk(graph_store* store, const char* const* filters, graph_layer_info** infos,
               size_t* count) {
  CHECK_STORE(store, "graph_walk");
  CHECK_ARG(infos != nullptr && count != nullptr, "graph_walk: infos and count are required");
  *infos = nullptr;
  *count = 0;
  GUARDED({
    std::vector<std::string> exprs;
    for (size_t i = 0; filters != nullptr && filters[i] != nullptr; ++i) exprs.push_back(filters[i]);
    std::vector<graph::LayerInfo> found;
    absl::Status s = store->store->Walk(exprs, [&](const graph::LayerInfo& l) {
      found.push_back(l);
      return absl::OkStatus();
    });
    if (!s.ok()) return FromStatus(s);
    auto* out = static_cast<graph_layer_info*>(std::calloc(found.size() + 1, sizeof(graph_layer_info)));
    if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
    for (size_t i = 0; i < found.size(); ++i) FillInfo(found[i], &out[i]);
    *infos = out;
    *count = found.size();
    return FromStatus(absl::OkStatus());
  })
}

void graph_layer_infos_free(graph_layer_info* infos, size_t count) {
  if (infos == nullptr) return;
  for (size_t i = 0; i < count; ++i) FreeInfoFields(&infos[i]);
  std::free(infos);
}

int graph_cleanup(graph_store* store, size_t* reaped) {
  CHECK_STORE(store, "graph_cleanup");
  GUARDED({
    absl::StatusOr<graph::CheckReport> r = store->store->Check(/*repair=*/true);
    if (!r.ok()) return FromStatus(r.status());
    if (reaped != nullptr) *reaped = r->repaired.size();
    return FromStatus(absl::OkStatus());
  })
}

}  // extern "C"
