#include "thinpool/mounts.h"

#include <libmount/libmount.h>

#include <memory>

namespace thinpool {

std::vector<std::string> MountPointsOf(dev_t dev) {
  std::vector<std::string> out;
  std::unique_ptr<libmnt_table, void (*)(libmnt_table*)> table(
      mnt_new_table_from_file("/proc/self/mountinfo"), mnt_unref_table);
  if (!table) return out;
  std::unique_ptr<libmnt_iter, void (*)(libmnt_iter*)> iter(mnt_new_iter(MNT_ITER_FORWARD),
                                                            mnt_free_iter);
  if (!iter) return out;
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(table.get(), iter.get(), &fs) == 0) {
    if (mnt_fs_get_devno(fs) != dev) continue;
    if (const char* target = mnt_fs_get_target(fs)) out.emplace_back(target);
  }
  return out;
}

}  // namespace thinpool
