// See zfs_lib.h. Only standard and OpenZFS headers here (see there why).
#include "graph/drivers/zfs_lib.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern "C" {
#include <libzfs.h>
#include <libzfs_core.h>
#include <libzutil.h>
}

namespace graph::zfslib {
namespace {

libzfs_handle_t* H(void* p) { return static_cast<libzfs_handle_t*>(p); }

// errno after a failed libzfs call (it keeps the ioctl's), EIO when none.
int LibErrno() { return errno != 0 ? errno : EIO; }

nvlist_t* ToNvlist(const Props& props) {
  nvlist_t* nv = fnvlist_alloc();
  for (const auto& [k, v] : props.strings) fnvlist_add_string(nv, k.c_str(), v.c_str());
  for (const auto& [k, v] : props.numbers) fnvlist_add_uint64(nv, k.c_str(), v);
  return nv;
}

// The first error of an lzc call that reports per-item errors.
int FirstError(int rc, nvlist_t* errlist) {
  if (rc != 0 && errlist != nullptr) {
    nvpair_t* p = nvlist_next_nvpair(errlist, nullptr);
    if (p != nullptr) rc = fnvpair_value_int32(p);
  }
  if (errlist != nullptr) fnvlist_free(errlist);
  return rc;
}

}  // namespace

std::unique_ptr<Handle> Handle::Open(int* err, std::string* why) {
  errno = 0;
  libzfs_handle_t* h = libzfs_init();
  if (h == nullptr) {
    *err = errno != 0 ? errno : ENOENT;
    *why = libzfs_error_init(*err);
    return nullptr;
  }
  libzfs_print_on_error(h, B_FALSE);
  int rc = libzfs_core_init();
  if (rc != 0) {
    libzfs_fini(h);
    *err = rc;
    *why = std::strerror(rc);
    return nullptr;
  }
  std::unique_ptr<Handle> out(new Handle);
  out->zfs_ = h;
  *err = 0;
  return out;
}

Handle::~Handle() {
  libzfs_core_fini();
  libzfs_fini(H(zfs_));
}

std::string Handle::LastError() {
  std::string action = libzfs_error_action(H(zfs_));
  std::string desc = libzfs_error_description(H(zfs_));
  return action.empty() ? desc : action + ": " + desc;
}

bool Handle::Exists(const std::string& name) { return lzc_exists(name.c_str()); }

int Handle::CreateFilesystem(const std::string& name, const Props& props) {
  nvlist_t* nv = ToNvlist(props);
  int rc = lzc_create(name.c_str(), LZC_DATSET_TYPE_ZFS, nv, nullptr, 0);
  fnvlist_free(nv);
  return rc;
}

int Handle::Snapshot(const std::string& snapshot) {
  nvlist_t* snaps = fnvlist_alloc();
  fnvlist_add_boolean(snaps, snapshot.c_str());
  nvlist_t* errlist = nullptr;
  int rc = lzc_snapshot(snaps, nullptr, &errlist);
  fnvlist_free(snaps);
  return FirstError(rc, errlist);
}

int Handle::Clone(const std::string& name, const std::string& origin, const Props& props) {
  nvlist_t* nv = ToNvlist(props);
  int rc = lzc_clone(name.c_str(), origin.c_str(), nv);
  fnvlist_free(nv);
  return rc;
}

int Handle::Destroy(const std::string& name) {
  if (name.find('@') == std::string::npos) return lzc_destroy(name.c_str());
  nvlist_t* snaps = fnvlist_alloc();
  fnvlist_add_boolean(snaps, name.c_str());
  nvlist_t* errlist = nullptr;
  int rc = lzc_destroy_snaps(snaps, B_FALSE, &errlist);
  fnvlist_free(snaps);
  return FirstError(rc, errlist);
}

int Handle::DeferDestroy(const std::string& snapshot) {
  nvlist_t* snaps = fnvlist_alloc();
  fnvlist_add_boolean(snaps, snapshot.c_str());
  nvlist_t* errlist = nullptr;
  int rc = lzc_destroy_snaps(snaps, B_TRUE, &errlist);
  fnvlist_free(snaps);
  return FirstError(rc, errlist);
}

namespace {
int CollectName(zfs_handle_t* child, void* arg) {
  static_cast<std::vector<std::string>*>(arg)->push_back(zfs_get_name(child));
  zfs_close(child);
  return 0;
}
int CollectSnapshot(zfs_handle_t* child, void* arg) {
  SnapshotInfo s;
  s.name = zfs_get_name(child);
  s.clones = zfs_prop_get_int(child, ZFS_PROP_NUMCLONES);
  static_cast<std::vector<SnapshotInfo>*>(arg)->push_back(s);
  zfs_close(child);
  return 0;
}
}  // namespace

int Handle::ListFilesystems(const std::string& parent, std::vector<std::string>* out,
                            std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  errno = 0;
  zfs_handle_t* zh = zfs_open(H(zfs_), parent.c_str(), ZFS_TYPE_FILESYSTEM);
  if (zh == nullptr) {
    int err = LibErrno();
    *why = LastError();
    return err;
  }
  int rc = zfs_iter_filesystems(zh, CollectName, out);
  zfs_close(zh);
  if (rc != 0) {
    *why = LastError();
    return LibErrno();
  }
  return 0;
}

int Handle::ListSnapshots(const std::string& fs, std::vector<SnapshotInfo>* out,
                          std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  errno = 0;
  zfs_handle_t* zh = zfs_open(H(zfs_), fs.c_str(), ZFS_TYPE_FILESYSTEM);
  if (zh == nullptr) {
    int err = LibErrno();
    *why = LastError();
    return err;
  }
  int rc = zfs_iter_snapshots(zh, B_FALSE, CollectSnapshot, out, 0, 0);
  zfs_close(zh);
  if (rc != 0) {
    *why = LastError();
    return LibErrno();
  }
  return 0;
}

int Handle::GetProperty(const std::string& name, const std::string& property, bool literal,
                        std::string* value, std::string* why) {
  zfs_prop_t prop = zfs_name_to_prop(property.c_str());
  if (prop == ZPROP_INVAL) {
    *why = "unknown property " + property;
    return EINVAL;
  }
  std::lock_guard<std::mutex> lock(mu_);
  errno = 0;
  zfs_handle_t* zh = zfs_open(H(zfs_), name.c_str(), ZFS_TYPE_DATASET);
  if (zh == nullptr) {
    int err = LibErrno();
    *why = LastError();
    return err;
  }
  char buf[ZFS_MAXPROPLEN];
  int rc = zfs_prop_get(zh, prop, buf, sizeof(buf), nullptr, nullptr, 0,
                        literal ? B_TRUE : B_FALSE);
  zfs_close(zh);
  if (rc != 0) {
    *why = "property " + property + " not available";
    return ENOENT;
  }
  *value = buf;
  return 0;
}

int Handle::GetPoolProperty(const std::string& pool, const std::string& property,
                            std::string* value, std::string* why) {
  zpool_prop_t prop = zpool_name_to_prop(property.c_str());
  if (prop == ZPOOL_PROP_INVAL) {
    *why = "unknown pool property " + property;
    return EINVAL;
  }
  std::lock_guard<std::mutex> lock(mu_);
  errno = 0;
  zpool_handle_t* ph = zpool_open_canfail(H(zfs_), pool.c_str());
  if (ph == nullptr) {
    int err = LibErrno();
    *why = LastError();
    return err;
  }
  char buf[ZFS_MAXPROPLEN];
  int rc = zpool_get_prop(ph, prop, buf, sizeof(buf), nullptr, B_FALSE);
  zpool_close(ph);
  if (rc != 0) {
    *why = "pool property " + property + " not available";
    return ENOENT;
  }
  *value = buf;
  return 0;
}

bool Handle::PoolImported(const std::string& pool) {
  std::lock_guard<std::mutex> lock(mu_);
  zpool_handle_t* ph = zpool_open_canfail(H(zfs_), pool.c_str());
  if (ph == nullptr) return false;
  zpool_close(ph);
  return true;
}

int Handle::CreateFilePool(const std::string& pool, const std::string& path,
                           const std::map<std::string, std::string>& fs_props, std::string* why) {
  nvlist_t* leaf = fnvlist_alloc();
  fnvlist_add_string(leaf, ZPOOL_CONFIG_TYPE, VDEV_TYPE_FILE);
  fnvlist_add_string(leaf, ZPOOL_CONFIG_PATH, path.c_str());
  fnvlist_add_uint64(leaf, ZPOOL_CONFIG_IS_LOG, 0);
  nvlist_t* root = fnvlist_alloc();
  fnvlist_add_string(root, ZPOOL_CONFIG_TYPE, VDEV_TYPE_ROOT);
  fnvlist_add_nvlist_array(root, ZPOOL_CONFIG_CHILDREN, &leaf, 1);
  nvlist_t* fsprops = fnvlist_alloc();
  for (const auto& [k, v] : fs_props) fnvlist_add_string(fsprops, k.c_str(), v.c_str());
  std::lock_guard<std::mutex> lock(mu_);
  errno = 0;
  int rc = zpool_create(H(zfs_), pool.c_str(), root, nullptr, fsprops);
  int err = rc == 0 ? 0 : LibErrno();
  if (rc != 0) *why = LastError();
  fnvlist_free(fsprops);
  fnvlist_free(root);
  fnvlist_free(leaf);
  return err;
}

int Handle::ImportFilePool(const std::string& pool, const std::string& dir, std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string d = dir;
  char* paths[1] = {d.data()};
  importargs_t args;
  std::memset(&args, 0, sizeof(args));
  args.path = paths;
  args.paths = 1;
  args.poolname = pool.c_str();
  args.scan = B_TRUE;
  errno = 0;
  nvlist_t* pools = zpool_search_import(H(zfs_), &args, &libzfs_config_ops);
  if (pools == nullptr) {
    *why = "no pool " + pool + " in " + dir;
    return ENOENT;
  }
  int err = ENOENT;
  *why = "no pool " + pool + " in " + dir;
  nvpair_t* p = nvlist_next_nvpair(pools, nullptr);
  if (p != nullptr) {
    nvlist_t* config = fnvpair_value_nvlist(p);
    errno = 0;
    if (zpool_import(H(zfs_), config, nullptr, nullptr) == 0) {
      err = 0;
    } else {
      err = LibErrno();
      *why = LastError();
    }
  }
  fnvlist_free(pools);
  return err;
}

int Handle::CountLabels(const std::string& path, int* labels) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  nvlist_t* config = nullptr;
  *labels = 0;
  int rc = zpool_read_label(fd, &config, labels);
  int err = rc == 0 ? 0 : (errno != 0 ? errno : EIO);
  ::close(fd);
  if (config != nullptr) nvlist_free(config);
  return err;
}

}  // namespace graph::zfslib
