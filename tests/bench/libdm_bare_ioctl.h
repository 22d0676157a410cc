/* Bare device-mapper ioctls in C: the baseline of libdm_ops_bench.
 * Each returns >= 0 on success, -errno on failure. */
#ifndef DMTHIN_TESTS_BENCH_LIBDM_BARE_IOCTL_H_
#define DMTHIN_TESTS_BENCH_LIBDM_BARE_IOCTL_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* event_nr sent on resume and remove (a udev cookie); 0 by default. */
extern uint32_t bare_cookie;

int bare_open(void);
int bare_version(int fd);
int bare_create(int fd, const char* name);
/* DM_DEV_CREATE that also gives the new device's number. */
int bare_create_dev(int fd, const char* name, uint32_t* major, uint32_t* minor);
int bare_load(int fd, const char* name, uint64_t length, const char* type, const char* params);
int bare_suspend(int fd, const char* name);
int bare_resume(int fd, const char* name);
int bare_remove(int fd, const char* name);
int bare_message(int fd, const char* name, const char* message);
int bare_status(int fd, const char* name);
int bare_list(int fd);

#ifdef __cplusplus
}
#endif

#endif  // DMTHIN_TESTS_BENCH_LIBDM_BARE_IOCTL_H_
