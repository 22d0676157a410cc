/* Benchmarks: run a program as a child and measure it (wall time and the
 * child's peak RSS from wait4). */
#ifndef DMTHIN_TESTS_BENCH_BENCH_CHILD_H_
#define DMTHIN_TESTS_BENCH_BENCH_CHILD_H_

#ifdef __cplusplus
extern "C" {
#endif

struct bench_child_usage {
  double wall_ms;
  double cpu_ms; /* user + system */
  long max_rss_kib;
};

/* Runs argv (NULL-terminated, argv[0] looked up in PATH; no shell) with
 * stdin and stdout on /dev/null. Returns its exit status (128 + signal, or
 * -errno if it could not start); *ms is the wall time, *max_rss_kib the
 * child's peak resident set (either may be NULL). */
int bench_run_child(char* const argv[], double* ms, long* max_rss_kib);
/* The same with CPU time too (usage may be NULL). */
int bench_run_child_usage(char* const argv[], struct bench_child_usage* usage);

#ifdef __cplusplus
}
#endif

#endif  // DMTHIN_TESTS_BENCH_BENCH_CHILD_H_
