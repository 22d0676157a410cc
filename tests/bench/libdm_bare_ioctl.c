#define _GNU_SOURCE
/* The baseline for libdm's benchmark: the same device-mapper operations as
 * bare ioctls in minimal C — one static 16 KiB buffer, no validation, no
 * decoding beyond what the operation needs, no device nodes. */
#include "libdm_bare_ioctl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static _Alignas(8) unsigned char buf[16384];

static struct dm_ioctl* header(const char* name, size_t size) {
  struct dm_ioctl* io = (struct dm_ioctl*)buf;
  memset(io, 0, sizeof *io);
  io->version[0] = 4;
  io->data_size = (uint32_t)size;
  io->data_start = sizeof *io;
  if (name) strncpy(io->name, name, sizeof io->name - 1);
  return io;
}

static int run(int fd, unsigned long request) {
  return ioctl(fd, request, buf) < 0 ? -errno : 0;
}

int bare_open(void) { return open("/dev/mapper/control", O_RDWR | O_CLOEXEC); }

int bare_version(int fd) {
  header(NULL, sizeof(struct dm_ioctl));
  int r = run(fd, DM_VERSION);
  return r < 0 ? r : (int)((struct dm_ioctl*)buf)->version[1];
}

int bare_create(int fd, const char* name) {
  header(name, sizeof(struct dm_ioctl));
  return run(fd, DM_DEV_CREATE);
}

int bare_create_dev(int fd, const char* name, uint32_t* major, uint32_t* minor) {
  int r = bare_create(fd, name);
  if (r < 0) return r;
  /* The kernel's huge_encode_dev: 12-bit major, 20-bit minor. */
  uint64_t dev = ((struct dm_ioctl*)buf)->dev;
  *major = (uint32_t)((dev & 0xfff00) >> 8);
  *minor = (uint32_t)((dev & 0xff) | ((dev >> 12) & 0xfff00));
  return 0;
}

int bare_load(int fd, const char* name, uint64_t length, const char* type, const char* params) {
  size_t plen = strlen(params) + 1;
  size_t span = sizeof(struct dm_target_spec) + ((plen + 7) & ~(size_t)7);
  struct dm_ioctl* io = header(name, sizeof *io + span);
  io->target_count = 1;
  struct dm_target_spec* spec = (struct dm_target_spec*)(buf + sizeof *io);
  memset(spec, 0, span);
  spec->length = length;
  spec->next = (uint32_t)span;
  strncpy(spec->target_type, type, sizeof spec->target_type - 1);
  memcpy(spec + 1, params, plen);
  return run(fd, DM_TABLE_LOAD);
}

int bare_suspend(int fd, const char* name) {
  header(name, sizeof(struct dm_ioctl))->flags = DM_SUSPEND_FLAG;
  return run(fd, DM_DEV_SUSPEND);
}

uint32_t bare_cookie = 0;

int bare_resume(int fd, const char* name) {
  header(name, sizeof(struct dm_ioctl))->event_nr = bare_cookie;
  return run(fd, DM_DEV_SUSPEND);
}

int bare_remove(int fd, const char* name) {
  header(name, sizeof(struct dm_ioctl))->event_nr = bare_cookie;
  return run(fd, DM_DEV_REMOVE);
}

int bare_message(int fd, const char* name, const char* message) {
  size_t mlen = strlen(message) + 1;
  struct dm_ioctl* io = header(name, sizeof buf);
  struct dm_target_msg* msg = (struct dm_target_msg*)(buf + sizeof *io);
  msg->sector = 0;
  memcpy(msg->message, message, mlen);
  return run(fd, DM_TARGET_MSG);
}

int bare_status(int fd, const char* name) {
  /* noflush: a thin-pool would otherwise commit its metadata first. */
  header(name, sizeof buf)->flags = DM_NOFLUSH_FLAG;
  int r = run(fd, DM_TABLE_STATUS);
  if (r < 0) return r;
  /* Walk to the first target's params, as a caller would. */
  struct dm_ioctl* io = (struct dm_ioctl*)buf;
  if (io->target_count == 0) return -ENODATA;
  const char* params = (const char*)(buf + io->data_start + sizeof(struct dm_target_spec));
  return (int)strlen(params);
}

int bare_list(int fd) {
  header(NULL, sizeof buf);
  int r = run(fd, DM_LIST_DEVICES);
  if (r < 0) return r;
  struct dm_ioctl* io = (struct dm_ioctl*)buf;
  int n = 0;
  size_t off = io->data_start;
  for (;;) {
    struct dm_name_list* nl = (struct dm_name_list*)(buf + off);
    if (!nl->dev) break;
    ++n;
    if (!nl->next) break;
    off += nl->next;
  }
  return n;
}
