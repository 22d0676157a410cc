// The C ABI (graph/include/graph.h) over graph::LayerStore.
#include "graph.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
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
  std::map<std::string, int> mounts;  // what this handle mounted
};

namespace {

thread_local std::string last_error;

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

#define GUARDED(body)                                        \
  try {                                                      \
    body                                                     \
  } catch (const std::bad_alloc&) {                          \
    return Fail(GRAPH_ENOMEM, "out of memory");              \
  } catch (const std::exception& e) {                        \
    return Fail(GRAPH_EIO, absl::StrCat("internal error: ", e.what())); \
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
    *out = handle;
    return FromStatus(absl::OkStatus());
  })
}

void graph_store_close(graph_store* store) {
  if (store == nullptr) return;
  try {
    for (auto& [name, n] : store->mounts) {
      while (n-- > 0) (void)store->store->Unmount(name);
    }
  } catch (...) {
  }
  delete store;
}

const char* graph_store_driver(const graph_store* store) {
  return store == nullptr ? "" : store->driver_name.c_str();
}

int graph_import_fd(graph_store* store, int fd, const char* parent, char** chain_id) {
  CHECK_ARG(store != nullptr, "graph_import_fd: store is NULL");
  CHECK_ARG(fd >= 0, "graph_import_fd: bad file descriptor");
  GUARDED({
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
  CHECK_ARG(store != nullptr && name != nullptr && key != nullptr,
            "graph_commit: store, name and key are required");
  GUARDED({ return FromStatus(store->store->Commit(name, key).status()); })
}

int graph_remove(graph_store* store, const char* name) { return graph_remove_flags(store, name, 0); }

int graph_remove_flags(graph_store* store, const char* name, int flags) {
  CHECK_ARG(store != nullptr && name != nullptr, "graph_remove: store and name are required");
  CHECK_ARG((flags & ~GRAPH_REMOVE_FORCE) == 0, "graph_remove: unknown flags");
  GUARDED({
    graph::RemoveOptions options;
    options.force = (flags & GRAPH_REMOVE_FORCE) != 0;
    absl::Status s = store->store->Remove(name, options);
    if (s.ok() && options.force) store->mounts.erase(name);  // nothing left to unmount at close
    return FromStatus(s);
  })
}

int graph_mount(graph_store* store, const char* name, char** path) {
  CHECK_ARG(store != nullptr && name != nullptr && path != nullptr,
            "graph_mount: store, name and path are required");
  GUARDED({
    absl::StatusOr<std::string> dir = store->store->Mount(name);
    if (!dir.ok()) return FromStatus(dir.status());
    store->mounts[name]++;
    *path = Dup(*dir);
    return FromStatus(absl::OkStatus());
  })
}

int graph_umount(graph_store* store, const char* name) {
  CHECK_ARG(store != nullptr && name != nullptr, "graph_umount: store and name are required");
  GUARDED({
    absl::Status s = store->store->Unmount(name);
    if (s.ok()) {
      auto it = store->mounts.find(name);
      if (it != store->mounts.end() && --it->second <= 0) store->mounts.erase(it);
    }
    return FromStatus(s);
  })
}

int graph_diff_fd(graph_store* store, const char* name, int fd, char** diff_id) {
  CHECK_ARG(store != nullptr && name != nullptr, "graph_diff_fd: store and name are required");
  CHECK_ARG(fd >= 0, "graph_diff_fd: bad file descriptor");
  GUARDED({
    graph::FdSink sink(fd);
    absl::StatusOr<graph::DiffResult> r = store->store->Diff(name, sink);
    if (!r.ok()) return FromStatus(r.status());
    if (diff_id != nullptr) *diff_id = Dup(r->diff_id);
    return FromStatus(absl::OkStatus());
  })
}

int graph_changes(graph_store* store, const char* name, graph_change** changes, size_t* count) {
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
  CHECK_ARG(store != nullptr && name != nullptr && info != nullptr,
            "graph_layer_stat: store, name and info are required");
  *info = nullptr;
  GUARDED({
    absl::StatusOr<graph::LayerInfo> l = store->store->Stat(name);
    if (!l.ok()) return FromStatus(l.status());
    auto* out = static_cast<graph_layer_info*>(std::calloc(1, sizeof(graph_layer_info)));
    if (out == nullptr) return Fail(GRAPH_ENOMEM, "out of memory");
    out->name = Dup(l->name);
    out->kind = Dup(graph::LayerKindName(l->kind));
    out->parent = Dup(l->parent);
    out->cache_id = Dup(l->cache_id);
    out->diff_id = Dup(l->diff_id);
    out->chain_id = Dup(l->chain_id);
    out->size = l->size;
    out->refs = l->refs;
    out->children = l->children;
    out->created_unix_nanos = absl::ToUnixNanos(l->created);
    *info = out;
    return FromStatus(absl::OkStatus());
  })
}

void graph_layer_info_free(graph_layer_info* info) {
  if (info == nullptr) return;
  for (char* p : {info->name, info->kind, info->parent, info->cache_id, info->diff_id,
                  info->chain_id}) {
    std::free(p);
  }
  std::free(info);
}

int graph_list(graph_store* store, char*** names, size_t* count) {
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
  CHECK_ARG(store != nullptr, "graph_check: store is NULL");
  GUARDED({
    absl::StatusOr<graph::CheckReport> r = store->store->Check(repair != 0);
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

}  // extern "C"
