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
//   <root>/records-home      "store" or "own": where the layer records are
//                            (opened the other way: refused;
//                            LayerRecords::ClaimHome)
//   <root>/records.db        the layer records when no layer store opened
//                            the driver (graph/records.h; in a store they are
//                            in its layers.db)
//   <root>/tmp/              the base device's mount point while it is made
//                            (cleared on open)
//   <root>/mnt/<id>          mount point of the layer's filesystem (Get),
//                            whose root is the layer's tree (the base has
//                            no lost+found); bases made by earlier versions
//                            (no layout=root in the base's entry) keep the
//                            tree under `rootfs/` inside, as Docker's did
//   <root>/.refs/<id>        Get/Put reference counts (graph::MountRefs)
//
// Thin names: "<tag>-<id>" (ids over 64 bytes: "<tag>-h<sha256 of id>",
// plus "+N" if the name is still held by a deferred deletion); the base is
// "<tag>+base". Every thin in the pool whose name starts with the tag is the
// driver's: one no record points at is an orphan and is deleted on open.
//
// Records: one per layer in graph::LayerRecords (the layer store's registry,
// or <root>/records.db without a store), fields `thin` (the thin's name:
// thinpool's registry stays the truth for the device, its id and size),
// `parent` and `rw` ("1" for a container layer). Earlier releases kept them
// in <root>/metadata/<id> files ("thin=..\nparent=..\nrw=..\nstate=..").
//
// Driver-wide entries, in the same database (LayerRecords::PutEntry):
//   base/base          the base device: thin, state (creating|ready), layout
//   deferred/<thin>    a removed layer's thin whose device is still held
//                      open (id=<layer>); written in one transaction with
//                      the record's Drop; the reaper deletes the thin, then
//                      the entry
//   deactivate/<id>    a layer whose last Put left its device active for the
//                      reaper to deactivate (relaxed commit: no fdatasync on
//                      Put's path)
// Earlier releases kept these as files (<root>/base, deferred/<thin>,
// deactivate/<id>): the open moves them and the metadata/ records into the
// database in one transaction, then deletes the files (malformed:
// DataLoss, nothing moved).
//
// Crash safety, one state machine with the other drivers: Create records
// its intent ("creating", naming the thin) and "ready" after the snapshot
// (in a store, committed with the layer's row); Remove marks "removing"
// before the thin is deleted and drops the record after.
// Opening the driver (under the lock) finishes every "removing" record,
// finishes "creating" ones whose thin the pool has and undoes the others
// when it keeps its own records (in a store its check --repair undoes
// them, through Remove) and deletes orphans — our thins no record names (a
// lost intent) — so after a crash at any point no thin id is orphaned and
// no half-made layer is visible.
// Syncs: the pool's registry is durable (its intent before every message),
// so the records need one commit that waits for the disk per Create and
// none per Remove: alone, the intent, committed beside the snapshot (a
// crash before it is durable leaves at most an orphan); in a store, the
// store's commit of the layer. Ready alone, Remove's mark and its drop are
// relaxed (no fdatasync): what a power cut can lose of them the open
// repairs from the pool's registry (a creating record with its thin:
// finished; a ready or removing record without: dropped). A deferred
// deletion's drop stays durable (the thin is still there). (Failpoints
// devmapper_create_after_intent, devmapper_after_snapshot,
// devmapper_after_remove_mark, devmapper_after_delete; for the entries
// devmapper_after_put_queued, devmapper_after_queued_deactivate,
// devmapper_after_defer, devmapper_after_reap_delete). The thinpool's own
// protocol (intent → message → transaction id → done) covers the pool side.
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
// Put off the caller's path: the last Put unmounts (synchronously: the
// caller may remove the mount point's parent or mount the device itself
// next) and queues the device's deactivation (DM_DEV_REMOVE waits for two
// RCU grace periods) for the reaper thread, which does it at once, under
// the layer's mount-count lock and only if nothing mounted the layer again.
// A Get (or Mounts) of the layer meanwhile cancels it and uses the device
// as it is (or waits, on that lock, for a deactivation under way); Remove
// cancels it and deactivates itself; closing the driver (and Cleanup)
// drains the queue. The queue's entry (deactivate/<id>) lets the next open
// deactivate what a crash left queued. With dm.reaper_interval=0
// (no thread) Put deactivates before it returns.
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
//   dm.sync_metadata=BOOL     accepted (Docker's option) and ignored: the
//                             deferred deletions it synced are entries now,
//                             as durable as the records (synchronous
//                             without a store, with the store's commit in
//                             one); the pool's registry and metadata are
//                             always synchronous
//   dm.reaper_interval=DURATION    background reaper period ("30s", "200ms";
//                             "0" = no thread, reap only at Create/Remove,
//                             and Put deactivates on the caller's path)
// Without dm.thinpooldev, dm.loopback or a pool already made under the root,
// the probe answers Unsupported::kConfiguration.
#ifndef DMTHIN_GRAPH_DRIVERS_DEVMAPPER_H_
#define DMTHIN_GRAPH_DRIVERS_DEVMAPPER_H_

#include "graph/driver.h"

namespace graph {

DriverInfo DevmapperDriverInfo();

}  // namespace graph

#endif  // DMTHIN_GRAPH_DRIVERS_DEVMAPPER_H_
