// Loop devices: attach a file as a block device, find the device that backs a
// file, grow it, detach it.
//
// Attach takes a free device from /dev/loop-control and configures it in one
// step with LOOP_CONFIGURE (falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on
// kernels without it). Another process may grab the same free device between
// LOOP_CTL_GET_FREE and our configure: that shows up as EBUSY and is retried
// with the next free device. While configuring, the device is flock()ed so
// udev does not probe a half-set-up device.
#ifndef DMTHIN_THINPOOL_LOOP_DEVICE_H_
#define DMTHIN_THINPOOL_LOOP_DEVICE_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/export.h"
#include "base/unique_fd.h"

DMTHIN_API_BEGIN
namespace thinpool {

struct LoopOptions {
  bool read_only = false;
  // Detach automatically when the last opener (e.g. a dm table) closes it.
  bool autoclear = false;
  // Ask for direct I/O (no double caching). Silently dropped when the backing
  // filesystem cannot do O_DIRECT (e.g. tmpfs); see LoopDevice::direct_io().
  bool direct_io = true;
  // Logical block size of the loop device; 0 keeps the kernel default (512).
  uint32_t block_size = 0;
  // Use LOOP_SET_FD + LOOP_SET_STATUS64 even where LOOP_CONFIGURE exists
  // (the path taken on kernels before 5.8; exposed so it can be tested).
  bool force_legacy_setup = false;
};

// What the kernel says about one loop device.
struct LoopInfo {
  int number = -1;
  std::string device;        // "/dev/loopN"
  std::string backing_file;  // as shown by sysfs (may end in " (deleted)")
  dev_t backing_dev = 0;     // st_dev of the backing file
  ino_t backing_inode = 0;   // st_ino of the backing file
  uint64_t offset = 0;
  uint64_t size_limit = 0;
  bool read_only = false;
  bool autoclear = false;
  bool direct_io = false;
};

class LoopDevice {
 public:
  // Attaches `backing_file` to a free loop device. The returned handle
  // detaches the device when destroyed unless Release() was called.
  static absl::StatusOr<LoopDevice> Attach(const std::string& backing_file,
                                           const LoopOptions& options = {});

  // Opens an attached loop device by path ("/dev/loopN"). Not owned: the
  // handle does not detach it on destruction.
  static absl::StatusOr<LoopDevice> Open(const std::string& device);

  // The loop device currently backed by `backing_file` (matched by device and
  // inode, so any path to the same file works), or nullopt if none. Not owned.
  static absl::StatusOr<std::optional<LoopDevice>> FindByBackingFile(
      const std::string& backing_file);

  // Every attached loop device.
  static absl::StatusOr<std::vector<LoopInfo>> List();

  LoopDevice(LoopDevice&&) noexcept = default;
  LoopDevice& operator=(LoopDevice&& other) noexcept;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  ~LoopDevice();

  int number() const { return number_; }
  const std::string& path() const { return path_; }
  dev_t devnum() const { return devnum_; }
  int fd() const { return fd_.get(); }
  // Whether this handle detaches the device when destroyed.
  bool owned() const { return owned_; }

  absl::StatusOr<LoopInfo> Info() const;
  // Size of the loop device in bytes (BLKGETSIZE64).
  absl::StatusOr<uint64_t> SizeBytes() const;
  // Whether the kernel is doing direct I/O for this device.
  bool direct_io() const;

  // Re-reads the backing file's size after it grew (LOOP_SET_CAPACITY).
  absl::Status RefreshCapacity();
  // Turns autoclear on or off.
  absl::Status SetAutoclear(bool autoclear);

  // Detaches the device (LOOP_CLR_FD, retried on EBUSY) and waits up to
  // `timeout` for the kernel to let go of the backing file. If another opener
  // keeps it busy the kernel detaches it when that opener closes it; this
  // returns an EBUSY status saying so. The handle is empty afterwards.
  absl::Status Detach(absl::Duration timeout = absl::Seconds(5));

  // Keeps the device attached when this handle goes away; closes the fd.
  void Release();

 private:
  LoopDevice(base::UniqueFd fd, int number, dev_t devnum, bool owned);

  base::UniqueFd fd_;
  int number_ = -1;
  std::string path_;
  dev_t devnum_ = 0;
  bool owned_ = false;
};

// Detaches the loop device at `device` ("/dev/loopN").
absl::Status DetachLoopDevice(const std::string& device,
                              absl::Duration timeout = absl::Seconds(5));

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_LOOP_DEVICE_H_
