// devicemapper: every layer is a thin device in a dm-thin pool (thinpool/),
// a snapshot of its parent's device; the first layer of a chain is a snapshot
// of a base device that carries an ext4 filesystem made once, in-process.
// Nothing is ever copied or formatted per layer: Create is one create_snap.
//
// Layout under the driver root:
//   <root>/instance          8 hex digits naming this root's thins ("tag")
//   <root>/.lock             flock()ed around Create, Remove, recovery, reaper
//   <root>/thinpool/         the thinpool state dir of a pool the driver made
//                            (.registry.db, <pool>/{data,metadata})
//   <root>/metadata/<id>     one record per layer: thin name, parent, state
//   <root>/base              the base device's record
//   <root>/tmp/              temporaries of atomic writes (cleared on open)
//   <root>/deferred/<thin>   a removed layer's thin whose device is still
//                            held open; the reaper deletes it later
//   <root>/mnt/<id>          mount point of the layer's filesystem (Get),
//                            whose root is the layer's tree (the base has
//                            no lost+found); bases made by earlier versions
//                            (no layout=root in <root>/base) keep the tree
//                            under `rootfs/` inside, as Docker's did
//   <root>/.refs/<id>        Get/Put reference counts (graph::MountRefs)
//
// Thin names: "<tag>-<id>" (ids over 64 bytes: "<tag>-h<sha256 of id>",
// plus "+N" if the name is still held by a deferred deletion); the base is
// "<tag>+base". Every thin in the pool whose name starts with the tag is the
// driver's: one no record points at is an orphan and is deleted on open.
//
// Crash safety: a layer's record is written ("ready") only once its thin
// exists; it is marked "removing" before the thin is deleted. Opening the
// driver (under the lock) finishes every "removing" record, deletes the thin
// of a "creating" one (written by earlier versions) and deletes orphans —
// our thins no record names, which is what a crash between snapshot and
// record leaves — so after a crash at any point no thin id is orphaned and
// no half-made layer is visible. The thinpool's own protocol (intent →
// message → transaction id → done) covers the pool side.
//
// Mounts describes the thin device with its ext4 (`type ext4`, source the
// device node, "ro" for image layers and views) for callers that mount
// themselves, as containerd's devmapper snapshotter does; it activates the
// device, Committed and Remove deactivate it. It mounts nothing.
//
// A read-write (container) layer's device is activated at Create, which
// thinpool overlaps with the snapshot's commit; Get then only mounts. Image
// layers stay inactive until mounted.
//
// Busy devices: a mount leaked into another mount namespace (a container
// that pivot_root'ed into the layer, a bind mount of it) or an open file
// keeps the thin device open. (A copy left on the layer's own mount point is
// detached by the kernel — since Linux 3.18 — when Remove deletes that
// directory.) Put then schedules a deferred remove of the dm device (the
// kernel removes it at last close); Remove hides the layer at once, frees
// its id for reuse, and leaves the thin to the reaper, which deletes it once
// the device is gone (a background thread every dm.reaper_interval, and at
// every Create/Remove).
//
// Driver options (DriverOptions::options; sizes as base::ParseSize reads them):
//   dm.thinpooldev=POOL       use the existing dmthin pool POOL (also
//                             /dev/mapper/dmthin-POOL) instead of making one
//   dm.statedir=DIR           thinpool state dir holding POOL
//                             (default /var/lib/dmthin)
//   dm.loopback=true          make a pool on sparse files under the root
//                             (implied by dm.loopdatasize/dm.loopmetadatasize)
//   dm.loopdatasize=SIZE      its data file (default 100G, sparse)
//   dm.loopmetadatasize=SIZE  its metadata file (default: thinpool's guide)
//   dm.blocksize=SIZE         its block size (default 64K)
//   dm.basesize=SIZE          size of the base device, so of every layer
//                             (default 10G)
//   dm.fs=ext4                filesystem of the base device (only ext4)
//   dm.mountopt=OPTS          extra mount options ("discard,noatime")
//   dm.min_free_space=PCT     refuse to create or fill layers when free data
//                             or metadata space is below PCT% (default 10%)
//   dm.blkdiscard=BOOL        discard a layer's blocks before deleting it
//                             (gives space back to a sparse data file)
//   dm.use_deferred_removal=BOOL   (default true)
//   dm.use_deferred_deletion=BOOL  (default true)
//   dm.sync_metadata=BOOL     fsync layer records (default false: like the
//                             overlay and vfs drivers, power-cut durability
//                             is the layer store's; the pool's registry and
//                             metadata are always synchronous)
//   dm.reaper_interval=DURATION    background reaper period ("30s", "200ms";
//                             "0" = no thread, reap only at Create/Remove)
// Without dm.thinpooldev, dm.loopback or a pool already made under the root,
// the probe answers Unsupported::kConfiguration.
#ifndef DMTHIN_GRAPH_DRIVERS_DEVMAPPER_H_
#define DMTHIN_GRAPH_DRIVERS_DEVMAPPER_H_

#include "graph/driver.h"

namespace graph {

DriverInfo DevmapperDriverInfo();

}  // namespace graph

#endif  // DMTHIN_GRAPH_DRIVERS_DEVMAPPER_H_
