#define _GNU_SOURCE
#include "bench_child.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

/* The child's peak RSS: wait4's ru_maxrss also counts the memory the child
 * had before exec, which for a spawned child is the parent's own. GNU time
 * (a small process of its own) starts the program and reports its %M, when
 * installed (package "time"); otherwise wait4's figure, an upper bound. */
static const char kTime[] = "/usr/bin/time";

int bench_run_child(char* const argv[], double* ms, long* max_rss_kib) {
  struct bench_child_usage u = {0, 0, 0};
  int rc = bench_run_child_usage(argv, &u);
  if (ms) *ms = u.wall_ms;
  if (max_rss_kib) *max_rss_kib = u.max_rss_kib;
  return rc;
}

int bench_run_child_usage(char* const argv[], struct bench_child_usage* usage) {
  char out[64];
  snprintf(out, sizeof out, "/tmp/bench-child-%d.rss", (int)getpid());
  const int timed = access(kTime, X_OK) == 0;
  char* args[256];
  int n = 0;
  if (timed) {
    args[n++] = (char*)kTime;
    args[n++] = (char*)"-f";
    args[n++] = (char*)"%M %U %S";
    args[n++] = (char*)"-o";
    args[n++] = out;
  }
  for (int i = 0; argv[i] != NULL && n < 255; ++i) args[n++] = argv[i];
  args[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &fa, NULL, args, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -rc;
  int status = 0;
  struct rusage ru = {0};
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) return -errno;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (usage) {
    usage->wall_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    usage->max_rss_kib = ru.ru_maxrss;
    usage->cpu_ms = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
    FILE* f = timed ? fopen(out, "r") : NULL;
    /* time writes "Command exited with non-zero status N" first on failure;
     * the last line is "%M %U %S". */
    char line[256];
    long kib = 0;
    double user = 0, sys = 0;
    int got = 0;
    while (f && fgets(line, sizeof line, f)) {
      if (sscanf(line, "%ld %lf %lf", &kib, &user, &sys) == 3) got = 1;
    }
    if (f) fclose(f);
    if (got && kib > 0) usage->max_rss_kib = kib;
  }
  if (timed) unlink(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
