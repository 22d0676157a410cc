/* libgraph C ABI: container image and container layers for runtimes in any
 * language.
 *
 * A store lives in one root directory: the layer registry (layers.db) and
 * one directory per graph driver (overlay, btrfs, vfs, aufs, devicemapper).
 * Image layers are imported from OCI layer tarballs and named by chain id
 * ("sha256:<hex>"); container layers ("active", read-write) and views
 * (read-only) are named by the caller and sit on a committed layer.
 *
 * Conventions:
 *  - Every call returns GRAPH_OK (0) or a graph_error code; the message of
 *    the last failure on the calling thread is graph_last_error().
 *  - Strings handed out by the library are malloc'd; free them with
 *    graph_free() (or the matching *_free function for structures).
 *  - No C++ types cross this boundary; handles are opaque.
 *  - A graph_store handle may be used by one thread at a time; several
 *    handles (in one or several processes) may share a root.
 */
#ifndef DMTHIN_GRAPH_C_H_
#define DMTHIN_GRAPH_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* libgraph.so is built with -fvisibility=hidden: what this header declares
 * is all it exports (with the C++ API of graph/include/graph/). */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define GRAPH_ABI_VERSION 2

typedef enum graph_error {
  GRAPH_OK = 0,
  GRAPH_EINVAL = 1,        /* bad argument (name, option, tarball path) */
  GRAPH_ENOTFOUND = 2,     /* no such layer / driver */
  GRAPH_EEXIST = 3,        /* name already taken */
  GRAPH_EPRECONDITION = 4, /* not now: layer has children, wrong kind, ... */
  GRAPH_EUNSUPPORTED = 5,  /* the kernel or filesystem cannot serve the driver */
  GRAPH_EPERM = 6,         /* permission denied */
  GRAPH_EDATA = 7,         /* corrupt or hostile input (tarball), data loss */
  GRAPH_EBUSY = 8,         /* resource busy / temporarily unavailable */
  GRAPH_ENOSPC = 9,        /* out of space */
  GRAPH_EIO = 10,          /* anything else: I/O or internal error */
  GRAPH_ENOMEM = 11
} graph_error;

/* A short fixed description of a code ("not found"). Never NULL. */
const char* graph_strerror(int code);

/* The message of the last failed call on this thread ("" if none). Valid
 * until the next libgraph call on this thread. */
const char* graph_last_error(void);

/* "0.1.0" */
const char* graph_version(void);

void graph_free(void* p);

typedef struct graph_store graph_store;

/* Opens (creating if needed) the store at `root` with driver `driver`
 * ("overlay", "btrfs", "vfs", "aufs", ...). NULL or "" uses the driver the
 * store was created with, or else the first driver, in priority order, that
 * this machine supports. */
int graph_store_open(const char* root, const char* driver, graph_store** out);

/* graph_store_open with driver options (dockerd's --storage-opt): `options`
 * is a NULL-terminated array of "key=value" strings, or NULL for none, e.g.
 *
 *   const char* opts[] = {"dm.loopdatasize=20G", "dm.basesize=4G", NULL};
 *   rc = graph_store_open_opts("/srv/graph", "devicemapper", opts, &store);
 *
 * Keys are the driver's (docs/graphctl.md lists them): overlay.mount_api,
 * dm.thinpooldev, dm.loopdatasize, dm.basesize, ... An entry without
 * '=', with an empty key, or a key given twice is GRAPH_EINVAL before
 * anything is opened. The driver checks the rest: a value it refuses, or a
 * key it does not know, is GRAPH_EINVAL with the key in graph_last_error()
 * (overlay, vfs and devicemapper refuse every unknown key; btrfs and aufs
 * only those with their own prefix, "btrfs." / "aufs."). Options are
 * not remembered: give them every time the store is opened (settings that
 * shape what is made, such as dm.basesize, take effect when the driver
 * first creates its state). The array is not kept after the call. */
int graph_store_open_opts(const char* root, const char* driver, const char* const* options,
                          graph_store** out);

/* Unmounts what this handle mounted and frees it. NULL is fine. */
void graph_store_close(graph_store* store);

/* The driver's name ("overlay"); valid while the store is open. */
const char* graph_store_driver(const graph_store* store);

/* Imports an OCI layer tar (plain, gzip or zstd) read from `fd` on image
 * layer `parent` (a chain id, or NULL for a base layer). On success
 * *chain_id gets the new (or existing) layer's chain id. */
int graph_import_fd(graph_store* store, int fd, const char* parent, char** chain_id);

enum {
  GRAPH_LAYER_ACTIVE = 0,   /* read-write layer (containerd Prepare) */
  GRAPH_LAYER_VIEW = 1,     /* read-only view (containerd View) */
  GRAPH_CREATE_INIT = 0x10  /* with ACTIVE: Docker-style init layer below */
};

/* Creates layer `name` of `flags` kind on committed layer `parent` (NULL =
 * empty). */
int graph_create(graph_store* store, const char* name, const char* parent, int flags);

/* Active layer `key` becomes committed layer `name`. */
int graph_commit(graph_store* store, const char* name, const char* key);

/* Drops a reference to layer `name`; the last one removes it. A layer that
 * is mounted (graph_mount, graphctl mount: in any process) is refused with
 * GRAPH_EBUSY, the message naming the layer and umount as the way out. */
int graph_remove(graph_store* store, const char* name);

enum { GRAPH_REMOVE_FORCE = 0x1 /* remove even while mounted */ };

/* graph_remove with flags: GRAPH_REMOVE_FORCE takes the layer away from
 * whoever has it mounted (their view is unmounted or deleted). */
int graph_remove_flags(graph_store* store, const char* name, int flags);

/* Mounts the full view of `name`; *path gets the directory. Each mount
 * needs one graph_umount. */
int graph_mount(graph_store* store, const char* name, char** path);
int graph_umount(graph_store* store, const char* name);

/* Writes layer `name`'s own changes as an uncompressed OCI layer tar to
 * `fd`; *diff_id (may be NULL) gets its "sha256:<hex>". */
int graph_diff_fd(graph_store* store, const char* name, int fd, char** diff_id);

enum { GRAPH_CHANGE_MODIFY = 0, GRAPH_CHANGE_ADD = 1, GRAPH_CHANGE_DELETE = 2 };

typedef struct graph_change {
  char* path; /* "/etc/hosts" */
  int kind;   /* GRAPH_CHANGE_* */
} graph_change;

/* Layer `name`'s changes against what is below it, sorted by path. */
int graph_changes(graph_store* store, const char* name, graph_change** changes, size_t* count);
void graph_changes_free(graph_change* changes, size_t count);

typedef struct graph_layer_info {
  char* name;
  char* kind;      /* "committed", "active", "view" */
  char* parent;    /* "" for a base layer */
  char* cache_id;  /* the driver's id */
  char* diff_id;   /* imported layers, else "" */
  char* chain_id;  /* imported layers, else "" */
  int64_t size;    /* imported layers: bytes of content */
  int64_t refs;
  int64_t children;
  int64_t created_unix_nanos;
  /* ABI 2 (appended: the library allocates and frees this structure, so
   * fields are only ever added at the end). */
  int64_t updated_unix_nanos;
  size_t label_count;
  char** label_keys;   /* label_count entries, sorted by key */
  char** label_values;
} graph_layer_info;

int graph_layer_stat(graph_store* store, const char* name, graph_layer_info** info);
void graph_layer_info_free(graph_layer_info* info);

/* Every visible layer, sorted by name. */
int graph_list(graph_store* store, char*** names, size_t* count);
void graph_strings_free(char** strings, size_t count);

/* ---- ABI 2: the containerd-shaped calls ------------------------------
 * Options travel in opaque objects with setters (LevelDB's c.h): new
 * settings become new setters, never new parameters. Every graph_store
 * call checks its handle: NULL, or a handle already closed, is GRAPH_EINVAL
 * ("stale or unknown store handle"), never a crash. */

/* A set of labels (key -> value; containerd's limit: key + value <= 4096
 * bytes, checked by the calls that take it). */
typedef struct graph_labels graph_labels;
graph_labels* graph_labels_new(void);
void graph_labels_free(graph_labels* labels);
/* Sets (value non-NULL) or deletes (value NULL) one label. GRAPH_EINVAL for
 * a NULL set or key. */
int graph_labels_set(graph_labels* labels, const char* key, const char* value);

/* How graph_prepare makes a layer. Defaults: active, no init layer, no
 * labels. */
typedef struct graph_create_options graph_create_options;
graph_create_options* graph_create_options_new(void);
void graph_create_options_free(graph_create_options* options);
/* GRAPH_LAYER_ACTIVE or GRAPH_LAYER_VIEW; anything else is GRAPH_EINVAL. */
int graph_create_options_set_kind(graph_create_options* options, int kind);
/* Non-zero: a Docker-style init layer below (active layers only). */
int graph_create_options_set_init_layer(graph_create_options* options, int init_layer);
/* Copies `labels` (NULL = none) into the options. */
int graph_create_options_set_labels(graph_create_options* options, const graph_labels* labels);

/* One mount, described (containerd's mount.Mount): the caller mounts
 * `source` of `type` with `options` at its own target. */
typedef struct graph_mount_desc {
  char* type;     /* "overlay", "bind", ... */
  char* source;
  char* target;   /* relative to the caller's mount point; "" = itself */
  char** options; /* option_count entries: "ro", "lowerdir=...", ... */
  size_t option_count;
} graph_mount_desc;
void graph_mounts_free(graph_mount_desc* mounts, size_t count);

/* containerd Prepare / View: creates layer `key` on committed layer `parent`
 * (NULL = empty) as `options` say (NULL = defaults) and returns the mounts
 * that give its view (*mounts and *count may be NULL when not wanted). */
int graph_prepare(graph_store* store, const char* key, const char* parent,
                  const graph_create_options* options, graph_mount_desc** mounts, size_t* count);

/* containerd Mounts: the mounts that give `name`'s view. */
int graph_mounts(graph_store* store, const char* name, graph_mount_desc** mounts, size_t* count);

/* containerd Commit with labels (NULL = none; merged into the layer's). */
int graph_commit_labels(graph_store* store, const char* name, const char* key,
                        const graph_labels* labels);

/* containerd Update: only labels change. `field_paths` is a NULL-terminated
 * array of "labels" or "labels.KEY" (NULL = replace all labels); a path
 * naming a key absent from `labels` deletes that label. *info (may be NULL)
 * gets the updated layer. */
int graph_update(graph_store* store, const char* name, const graph_labels* labels,
                 const char* const* field_paths, graph_layer_info** info);

/* containerd Usage: allocated bytes and distinct inodes `name` itself
 * takes (parents excluded), active layers included. Either may be NULL. */
int graph_usage(graph_store* store, const char* name, int64_t* bytes, int64_t* inodes);

/* containerd Walk: every visible layer that any of `filters` (a
 * NULL-terminated array of containerd filter expressions, e.g.
 * "kind==committed,labels.team==a"; NULL = all) matches, sorted by name,
 * with labels. A filter that does not parse is GRAPH_EINVAL. */
int graph_walk(graph_store* store, const char* const* filters, graph_layer_info** infos,
               size_t* count);
/* Frees graph_walk's array. */
void graph_layer_infos_free(graph_layer_info* infos, size_t count);

/* containerd Cleanup: reaps what interrupted or failed removals and creates
 * left (check --repair). *reaped (may be NULL) gets how many things were
 * reclaimed. */
int graph_cleanup(graph_store* store, size_t* reaped);

enum {
  GRAPH_CHECK_REPAIR = 0x1, /* reap interrupted operations, fix the registry */
  GRAPH_CHECK_PRUNE = 0x2   /* with REPAIR: delete driver layers no record owns */
};

/* Checks the registry file and compares it with the driver; `repair` is 0
 * or GRAPH_CHECK_* flags (any non-zero value repairs). Driver layers no
 * record owns are deleted only with GRAPH_CHECK_PRUNE: they may be all that
 * is left of layers whose records were lost. *problems (may be NULL) gets
 * how many problems were found; *report (may be NULL) a human-readable
 * report. */
int graph_check(graph_store* store, int repair, size_t* problems, char** report);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* DMTHIN_GRAPH_C_H_ */
