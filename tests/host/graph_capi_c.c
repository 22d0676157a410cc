/* C11 test program for libgraph's C ABI (graph.h), linked against
 * libgraph.so. Usage: graph_capi_c ROOT DRIVER
 * Builds a layer through the API, exports it as a tar, imports the tar as an
 * image layer, runs a container layer (with init layer) on it, and checks
 * mount, changes, diff, errors and cleanup; then ABI 2's labels, option
 * objects, described mounts, Update, Usage, filtered Walk and Cleanup, with
 * NULL and stale (closed) handles. Prints "PASS" and exits 0, or
 * prints what failed and exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph.h"

static int failures = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, graph_last_error());                          \
      failures++;                                                            \
    }                                                                        \
  } while (0)

#define MUST(call)                                                            \
  do {                                                                        \
    int rc_ = (call);                                                         \
    if (rc_ != GRAPH_OK) {                                                    \
      fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call, \
              graph_strerror(rc_), graph_last_error());                       \
      return 1;                                                               \
    }                                                                         \
  } while (0)

static int write_file(const char* dir, const char* name, const char* content) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE* f = fopen(path, "w");
  if (f == NULL) return -1;
  fputs(content, f);
  return fclose(f);
}

static int file_exists(const char* dir, const char* name) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  return lstat(path, &st) == 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s ROOT DRIVER\n", argv[0]);
    return 2;
  }
  const char* root = argv[1];
  const char* driver = argv[2];
  graph_store* store = NULL;

  /* Errors come back as codes with messages. */
  CHECK(graph_store_open(root, "no-such-driver", &store) == GRAPH_ENOTFOUND);
  CHECK(store == NULL);
  CHECK(strstr(graph_last_error(), "no-such-driver") != NULL);
  CHECK(graph_store_open(NULL, driver, &store) == GRAPH_EINVAL);
  CHECK(strcmp(graph_strerror(GRAPH_EEXIST), "already exists") == 0);

  /* Driver options: malformed ones are refused before anything is opened,
   * a key the driver does not know by the driver, named in the message. */
  {
    const char* no_value[] = {"no-equals-sign", NULL};
    const char* no_key[] = {"=1", NULL};
    const char* twice[] = {"a.b=1", "a.b=2", NULL};
    CHECK(graph_store_open_opts(root, driver, no_value, &store) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "no-equals-sign") != NULL);
    CHECK(graph_store_open_opts(root, driver, no_key, &store) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "empty key") != NULL);
    CHECK(graph_store_open_opts(root, driver, twice, &store) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "a.b given twice") != NULL);
    CHECK(store == NULL);
    char bogus[256], refusal[300];
    snprintf(bogus, sizeof(bogus), "%s.bogus=1", driver);
    snprintf(refusal, sizeof(refusal), "unknown option \"%s.bogus\"", driver);
    const char* unknown[] = {bogus, NULL};
    CHECK(graph_store_open_opts(root, driver, unknown, &store) == GRAPH_EINVAL);
    CHECK(store == NULL);
    CHECK(strstr(graph_last_error(), refusal) != NULL);
  }

  MUST(graph_store_open(root, driver, &store));
  CHECK(strcmp(graph_store_driver(store), driver) == 0);
  CHECK(strlen(graph_version()) > 0);

  /* Build a layer by hand and export it. */
  MUST(graph_create(store, "build", NULL, GRAPH_LAYER_ACTIVE));
  char* dir = NULL;
  MUST(graph_mount(store, "build", &dir));
  CHECK(write_file(dir, "hello.txt", "hello from C\n") == 0);
  {
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/etc", dir);
    CHECK(mkdir(sub, 0755) == 0);
  }
  CHECK(write_file(dir, "etc/os-release", "ID=capi\n") == 0);
  graph_free(dir);
  MUST(graph_umount(store, "build"));
  MUST(graph_commit(store, "built", "build"));

  /* File descriptors are checked at the edge: one clear message, one prefix,
   * nothing created. */
  {
    int dirfd = open("/", O_RDONLY | O_DIRECTORY);
    int rofd = open("/dev/null", O_RDONLY);
    char* none = NULL;
    CHECK(graph_import_fd(store, dirfd, NULL, &none) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "graph_import_fd: fd ") == graph_last_error());
    CHECK(strstr(graph_last_error(), "is a directory") != NULL);
    CHECK(strstr(graph_last_error(), "reading layer stream: reading") == NULL);
    CHECK(graph_diff_fd(store, "built", rofd, &none) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "graph_diff_fd: fd ") == graph_last_error());
    CHECK(strstr(graph_last_error(), "not open for writing") != NULL);
    CHECK(graph_import_fd(store, -1, NULL, &none) == GRAPH_EINVAL);
    CHECK(none == NULL);
    char** names = NULL;
    size_t count = 0;
    MUST(graph_list(store, &names, &count));
    CHECK(count == 1); /* built */
    graph_strings_free(names, count);
    close(dirfd);
    close(rofd);
  }

  char tar_path[] = "/tmp/graph-capi-XXXXXX";
  int fd = mkstemp(tar_path);
  CHECK(fd >= 0);
  unlink(tar_path);
  char* diff_id = NULL;
  MUST(graph_diff_fd(store, "built", fd, &diff_id));
  CHECK(strncmp(diff_id, "sha256:", 7) == 0 && strlen(diff_id) == 71);

  /* Import it: a base layer's chain id is its diff id. */
  CHECK(lseek(fd, 0, SEEK_SET) == 0);
  char* chain = NULL;
  MUST(graph_import_fd(store, fd, NULL, &chain));
  CHECK(strcmp(chain, diff_id) == 0);
  close(fd);

  graph_layer_info* info = NULL;
  MUST(graph_layer_stat(store, chain, &info));
  CHECK(strcmp(info->kind, "committed") == 0);
  CHECK(strcmp(info->diff_id, diff_id) == 0);
  CHECK(info->size == (int64_t)(strlen("hello from C\n") + strlen("ID=capi\n")));
  CHECK(info->refs == 1);
  graph_layer_info_free(info);

  /* A container layer with an init layer below it. */
  MUST(graph_create(store, "ctr", chain, GRAPH_LAYER_ACTIVE | GRAPH_CREATE_INIT));
  CHECK(graph_create(store, "ctr", chain, GRAPH_LAYER_ACTIVE) == GRAPH_EEXIST);
  CHECK(graph_create(store, "x", "ctr", GRAPH_LAYER_ACTIVE) == GRAPH_EINVAL);
  CHECK(graph_create(store, "x", chain, 0x100) == GRAPH_EINVAL);
  MUST(graph_mount(store, "ctr", &dir));
  CHECK(file_exists(dir, "hello.txt"));
  CHECK(file_exists(dir, "etc/hosts"));
  CHECK(file_exists(dir, "etc/resolv.conf"));
  CHECK(write_file(dir, "etc/motd", "welcome\n") == 0);
  {
    char victim[4096];
    snprintf(victim, sizeof(victim), "%s/hello.txt", dir);
    CHECK(unlink(victim) == 0);
  }
  graph_free(dir);
  MUST(graph_umount(store, "ctr"));

  /* A mounted layer is not removed: GRAPH_EBUSY naming the layer and umount
   * as the way out; GRAPH_REMOVE_FORCE is the only way past. */
  MUST(graph_mount(store, "ctr", &dir));
  graph_free(dir);
  CHECK(graph_remove(store, "ctr") == GRAPH_EBUSY);
  CHECK(strstr(graph_last_error(), "\"ctr\": it is mounted") != NULL);
  CHECK(strstr(graph_last_error(), "umount") != NULL);
  CHECK(graph_remove_flags(store, "ctr", 0x80) == GRAPH_EINVAL);
  MUST(graph_umount(store, "ctr"));
  /* umount of a layer nobody mounted: the same answer on every driver, with
   * the layer's name (not the driver's cache id) and one prefix. */
  CHECK(graph_umount(store, "ctr") == GRAPH_EPRECONDITION);
  CHECK(strstr(graph_last_error(), "\"ctr\" is not mounted") != NULL);
  {
    char message[1024];
    snprintf(message, sizeof(message), "%s", graph_last_error());
    graph_layer_info* ctr = NULL;
    MUST(graph_layer_stat(store, "ctr", &ctr));
    CHECK(strstr(message, ctr->cache_id) == NULL);
    graph_layer_info_free(ctr);
  }

  graph_change* changes = NULL;
  size_t n = 0;
  MUST(graph_changes(store, "ctr", &changes, &n));
  CHECK(n == 3);
  if (n == 3) {
    CHECK(strcmp(changes[0].path, "/etc") == 0 && changes[0].kind == GRAPH_CHANGE_MODIFY);
    CHECK(strcmp(changes[1].path, "/etc/motd") == 0 && changes[1].kind == GRAPH_CHANGE_ADD);
    CHECK(strcmp(changes[2].path, "/hello.txt") == 0 && changes[2].kind == GRAPH_CHANGE_DELETE);
  }
  graph_changes_free(changes, n);

  char** names = NULL;
  MUST(graph_list(store, &names, &n));
  CHECK(n == 3); /* built, chain, ctr */
  graph_strings_free(names, n);

  CHECK(graph_remove(store, chain) == GRAPH_EPRECONDITION); /* ctr sits on it */
  MUST(graph_mount(store, "ctr", &dir));
  graph_free(dir);
  MUST(graph_remove_flags(store, "ctr", GRAPH_REMOVE_FORCE));
  MUST(graph_remove(store, chain));
  MUST(graph_remove(store, "built"));
  CHECK(graph_layer_stat(store, chain, &info) == GRAPH_ENOTFOUND);

  /* ---- ABI 2: labels, options, described mounts, Update, Usage, Walk,
   * Cleanup; NULL everywhere. */
  {
    graph_labels* labels = graph_labels_new();
    CHECK(labels != NULL);
    MUST(graph_labels_set(labels, "team", "a"));
    MUST(graph_labels_set(labels, "gone", "x"));
    MUST(graph_labels_set(labels, "gone", NULL));
    CHECK(graph_labels_set(NULL, "k", "v") == GRAPH_EINVAL);
    CHECK(graph_labels_set(labels, NULL, "v") == GRAPH_EINVAL);

    graph_create_options* opts = graph_create_options_new();
    CHECK(opts != NULL);
    CHECK(graph_create_options_set_kind(opts, 7) == GRAPH_EINVAL);
    CHECK(graph_create_options_set_kind(NULL, GRAPH_LAYER_VIEW) == GRAPH_EINVAL);
    CHECK(graph_create_options_set_init_layer(NULL, 1) == GRAPH_EINVAL);
    CHECK(graph_create_options_set_labels(NULL, labels) == GRAPH_EINVAL);
    MUST(graph_create_options_set_labels(opts, labels));

    /* Prepare returns the mounts, described: the caller mounts. */
    graph_mount_desc* mounts = NULL;
    size_t nm = 0;
    MUST(graph_prepare(store, "p1", NULL, opts, &mounts, &nm));
    CHECK(nm >= 1);
    if (nm >= 1) {
      CHECK(strlen(mounts[0].type) > 0 && strlen(mounts[0].source) > 0);
      int rw = 0;
      for (size_t i = 0; i < mounts[0].option_count; ++i) rw |= strcmp(mounts[0].options[i], "rw") == 0;
      CHECK(rw || mounts[0].option_count > 0);
    }
    graph_mounts_free(mounts, nm);
    CHECK(graph_prepare(store, "p1", NULL, opts, NULL, NULL) == GRAPH_EEXIST);
    CHECK(graph_prepare(store, NULL, NULL, opts, NULL, NULL) == GRAPH_EINVAL);
    MUST(graph_prepare(store, "p0", NULL, NULL, NULL, NULL)); /* default options */

    /* Write into it, measure it, commit with labels. */
    MUST(graph_mount(store, "p1", &dir));
    CHECK(write_file(dir, "a.txt", "0123456789") == 0);
    graph_free(dir);
    MUST(graph_umount(store, "p1"));
    int64_t bytes = -1, inodes = -1;
    MUST(graph_usage(store, "p1", &bytes, &inodes));
    CHECK(bytes > 0 && inodes >= 2); /* the root dir and a.txt at least */
    MUST(graph_usage(store, "p1", NULL, NULL));
    CHECK(graph_usage(store, "nope", &bytes, &inodes) == GRAPH_ENOTFOUND);
    CHECK(graph_usage(store, NULL, &bytes, &inodes) == GRAPH_EINVAL);

    graph_labels* more = graph_labels_new();
    MUST(graph_labels_set(more, "stage", "done"));
    MUST(graph_commit_labels(store, "c1", "p1", more));
    CHECK(graph_commit_labels(store, "c2", "p1", NULL) == GRAPH_ENOTFOUND);
    CHECK(graph_commit_labels(store, NULL, "p1", NULL) == GRAPH_EINVAL);

    /* A view on it: mounts read-only. */
    MUST(graph_create_options_set_kind(opts, GRAPH_LAYER_VIEW));
    MUST(graph_prepare(store, "v1", "c1", opts, &mounts, &nm));
    if (nm >= 1) {
      int ro = 0;
      for (size_t i = 0; i < mounts[0].option_count; ++i) ro |= strcmp(mounts[0].options[i], "ro") == 0;
      CHECK(ro);
    }
    graph_mounts_free(mounts, nm);
    MUST(graph_mounts(store, "v1", &mounts, &nm));
    CHECK(nm >= 1);
    graph_mounts_free(mounts, nm);
    CHECK(graph_mounts(store, "nope", &mounts, &nm) == GRAPH_ENOTFOUND);
    CHECK(graph_mounts(store, "v1", NULL, &nm) == GRAPH_EINVAL);
    CHECK(graph_prepare(store, "v2", "p0", opts, NULL, NULL) == GRAPH_EINVAL); /* parent not committed */

    /* Update: field paths as containerd's. */
    graph_labels* upd = graph_labels_new();
    MUST(graph_labels_set(upd, "team", "b"));
    const char* paths[] = {"labels.team", "labels.stage", NULL};
    graph_layer_info* li = NULL;
    MUST(graph_update(store, "c1", upd, paths, &li));
    CHECK(li != NULL && li->label_count == 1);
    if (li != NULL && li->label_count == 1) {
      CHECK(strcmp(li->label_keys[0], "team") == 0 && strcmp(li->label_values[0], "b") == 0);
      CHECK(li->updated_unix_nanos >= li->created_unix_nanos);
    }
    graph_layer_info_free(li);
    const char* bad_paths[] = {"parent", NULL};
    CHECK(graph_update(store, "c1", upd, bad_paths, NULL) == GRAPH_EINVAL);
    CHECK(graph_update(store, "nope", upd, NULL, NULL) == GRAPH_ENOTFOUND);

    /* Walk with containerd filters: infos with labels. */
    graph_layer_info* infos = NULL;
    size_t ni = 0;
    const char* by_team[] = {"labels.team==b", NULL};
    MUST(graph_walk(store, by_team, &infos, &ni));
    CHECK(ni == 1 && strcmp(infos[0].name, "c1") == 0);
    graph_layer_infos_free(infos, ni);
    const char* any[] = {"kind==view", "name==p0", NULL};
    MUST(graph_walk(store, any, &infos, &ni));
    CHECK(ni == 2 && strcmp(infos[0].name, "p0") == 0 && strcmp(infos[1].name, "v1") == 0);
    graph_layer_infos_free(infos, ni);
    MUST(graph_walk(store, NULL, &infos, &ni));
    CHECK(ni == 3); /* p0, c1, v1 */
    graph_layer_infos_free(infos, ni);
    const char* broken[] = {"name=c1", NULL};
    CHECK(graph_walk(store, broken, &infos, &ni) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "at byte") != NULL);
    CHECK(graph_walk(store, NULL, NULL, &ni) == GRAPH_EINVAL);

    size_t reaped = 99;
    MUST(graph_cleanup(store, &reaped));
    CHECK(reaped == 0);
    MUST(graph_cleanup(store, NULL));

    MUST(graph_remove(store, "v1"));
    MUST(graph_remove(store, "c1"));
    MUST(graph_remove(store, "p0"));
    graph_labels_free(upd);
    graph_labels_free(more);
    graph_labels_free(labels);
    graph_labels_free(NULL);
    graph_create_options_free(opts);
    graph_create_options_free(NULL);
    graph_mounts_free(NULL, 0);
    graph_layer_infos_free(NULL, 0);

    /* NULL store handles. */
    CHECK(graph_walk(NULL, NULL, &infos, &ni) == GRAPH_EINVAL);
    CHECK(strstr(graph_last_error(), "store is NULL") != NULL);
    CHECK(graph_usage(NULL, "c1", NULL, NULL) == GRAPH_EINVAL);
    CHECK(graph_prepare(NULL, "k", NULL, NULL, NULL, NULL) == GRAPH_EINVAL);
    CHECK(graph_cleanup(NULL, NULL) == GRAPH_EINVAL);
    CHECK(graph_update(NULL, "c1", NULL, NULL, NULL) == GRAPH_EINVAL);
    CHECK(graph_commit_labels(NULL, "a", "b", NULL) == GRAPH_EINVAL);
    CHECK(graph_mounts(NULL, "a", &mounts, &nm) == GRAPH_EINVAL);
  }

  size_t problems = 99;
  char* report = NULL;
  MUST(graph_check(store, 0, &problems, &report));
  CHECK(problems == 0);
  if (problems != 0) fprintf(stderr, "%s", report);
  graph_free(report);
  graph_free(chain);
  graph_free(diff_id);
  graph_store_close(store);

  /* A closed (stale) handle is refused, never followed; closing twice is
   * harmless. */
  CHECK(graph_list(store, &names, &n) == GRAPH_EINVAL);
  CHECK(strstr(graph_last_error(), "stale") != NULL);
  CHECK(graph_usage(store, "x", NULL, NULL) == GRAPH_EINVAL);
  CHECK(graph_walk(store, NULL, &info, &n) == GRAPH_EINVAL);
  CHECK(strcmp(graph_store_driver(store), "") == 0);
  graph_store_close(store);

  /* An empty option list is no options. */
  {
    const char* none[] = {NULL};
    store = NULL;
    MUST(graph_store_open_opts(root, driver, none, &store));
    CHECK(strcmp(graph_store_driver(store), driver) == 0);
    graph_store_close(store);
  }

  if (failures != 0) {
    printf("FAIL (%d checks)\n", failures);
    return 1;
  }
  printf("PASS\n");
  return 0;
}
