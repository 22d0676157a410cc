// containerd's own snapshotter conformance suite
// (github.com/containerd/containerd/snapshots/testsuite) against
// dmthin-snapshotter, through containerd's gRPC proxy client — the same
// client containerd uses for a [proxy_plugins] snapshotter. Every sub-test
// gets a fresh dmthin-snapshotter on a fresh root.
//
// Built offline in GOPATH mode against Debian's Go packages
// (tests/containerd/module.mk) and run by tests/host/snapshotter_suite_test.cc.
//
// Environment:
//   DMTHIN_SNAPSHOTTER   the dmthin-snapshotter binary (required)
//   DMTHIN_DRIVER        graph driver (overlay, vfs, btrfs, devicemapper, zfs)
//   DMTHIN_STORAGE_OPTS  driver options, KEY=VALUE separated by spaces
//   DMTHIN_ZFS_PARENT    zfs: a dataset under which every root gets a child
//                        dataset of its own (`zfs create`), passed as
//                        zfs.fsname (a zfs driver owns every dataset under
//                        its parent, so stores never share one)
package snapshottersuite

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func TestSnapshotterSuite(t *testing.T) {
	bin := os.Getenv("DMTHIN_SNAPSHOTTER")
	if bin == "" {
		t.Skip("DMTHIN_SNAPSHOTTER is not set")
	}
	driver := os.Getenv("DMTHIN_DRIVER")
	testsuite.SnapshotterSuite(t, "dmthin-"+driver, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return start(bin, driver, root)
	})
}

// Keys are containerd's opaque strings (namespace/counter/key), any
// characters, long ones too: they round-trip through Prepare, Commit, Stat,
// Walk and Remove.
func TestOpaqueKeys(t *testing.T) {
	bin := os.Getenv("DMTHIN_SNAPSHOTTER")
	if bin == "" {
		t.Skip("DMTHIN_SNAPSHOTTER is not set")
	}
	ctx := namespaces.WithNamespace(context.Background(), "testsuite")
	root := t.TempDir()
	sn, cleanup, err := start(bin, os.Getenv("DMTHIN_DRIVER"), root)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	keys := []string{
		"default/12/sha256:" + strings.Repeat("0123456789abcdef", 4),
		"../../etc/passwd",
		"/absolute/path",
		"spaces and\nnewline\ttab",
		"ünïcödé/键/🙂",
		strings.Repeat("long/", 800),
		".",
	}
	for i, key := range keys {
		tmp := fmt.Sprintf("extract-%d %s", i, key)
		if _, err := sn.Prepare(ctx, tmp, "", snapshots.WithLabels(map[string]string{"k": key})); err != nil {
			t.Fatalf("Prepare %q: %v", tmp, err)
		}
		if err := sn.Commit(ctx, key, tmp); err != nil {
			t.Fatalf("Commit %q: %v", key, err)
		}
		child := key + "/child"
		if _, err := sn.View(ctx, child, key); err != nil {
			t.Fatalf("View on %q: %v", key, err)
		}
		info, err := sn.Stat(ctx, child)
		if err != nil || info.Parent != key || info.Kind != snapshots.KindView {
			t.Fatalf("Stat %q = %+v, %v", child, info, err)
		}
	}
	seen := map[string]bool{}
	if err := sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		seen[info.Name] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if !seen[key] || !seen[key+"/child"] {
			t.Errorf("Walk misses %q or its child", key)
		}
		if err := sn.Remove(ctx, key+"/child"); err != nil {
			t.Errorf("Remove %q: %v", key+"/child", err)
		}
		if err := sn.Remove(ctx, key); err != nil {
			t.Errorf("Remove %q: %v", key, err)
		}
	}
	if _, err := sn.Prepare(ctx, "", ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Prepare of an empty key: %v, want InvalidArgument", err)
	}
}

// kill -9 loses nothing: a restarted server answers Stat and Walk as
// before, and the snapshots keep working.
func TestRestartKeepsState(t *testing.T) {
	bin := os.Getenv("DMTHIN_SNAPSHOTTER")
	if bin == "" {
		t.Skip("DMTHIN_SNAPSHOTTER is not set")
	}
	driver := os.Getenv("DMTHIN_DRIVER")
	ctx := namespaces.WithNamespace(context.Background(), "testsuite")
	root := t.TempDir()
	sn, _, err := startProcess(bin, driver, root)
	if err != nil {
		t.Fatal(err)
	}
	labels := snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "restart", "l": "1"})
	if _, err := sn.Prepare(ctx, "default/1/base-tmp", "", labels); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "default/2/base", "default/1/base-tmp", labels); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "default/3/active", "default/2/base", labels); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.View(ctx, "default/4/view", "default/2/base"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Update(ctx, snapshots.Info{Name: "default/3/active", Labels: map[string]string{"l": "2"}},
		"labels.l"); err != nil {
		t.Fatal(err)
	}
	before := walkAll(ctx, t, sn)
	if len(before) != 3 {
		t.Fatalf("Walk before the restart: %v", before)
	}
	sn.kill()

	sn2, cleanup, err := startProcess(bin, driver, root)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	after := walkAll(ctx, t, sn2)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("Walk after kill -9 and restart differs:\nbefore %+v\nafter  %+v", before, after)
	}
	for name, want := range before {
		got, err := sn2.Stat(ctx, name)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Stat %q after restart = %+v, %v; want %+v", name, got, err, want)
		}
	}
	if err := sn2.Commit(ctx, "default/5/top", "default/3/active"); err != nil {
		t.Errorf("Commit after restart: %v", err)
	}
	for _, key := range []string{"default/4/view", "default/5/top", "default/2/base"} {
		if err := sn2.Remove(ctx, key); err != nil {
			t.Errorf("Remove %q after restart: %v", key, err)
		}
	}
}

func walkAll(ctx context.Context, t *testing.T, sn snapshots.Snapshotter) map[string]snapshots.Info {
	all := map[string]snapshots.Info{}
	if err := sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		all[info.Name] = info
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return all
}

// start runs dmthin-snapshotter on root and connects the proxy client; the
// cleanup closes the connection and stops the server with SIGTERM.
func start(bin, driver, root string) (snapshots.Snapshotter, func() error, error) {
	sn, cleanup, err := startProcess(bin, driver, root)
	if err != nil {
		return nil, nil, err
	}
	tsn := &timed{Snapshotter: sn, began: time.Now(), calls: map[string]*callTime{}}
	return tsn, func() error {
		tsn.report()
		return cleanup()
	}, nil
}

// timed counts the calls of each method and the time spent in them: the
// suite's stderr shows, per case, where the time went (the rest is the
// suite's own mounts and file work).
type timed struct {
	snapshots.Snapshotter
	began time.Time
	mu    sync.Mutex
	calls map[string]*callTime
}

type callTime struct {
	n     int
	total time.Duration
}

func (t *timed) note(method string, since time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.calls[method]
	if c == nil {
		c = &callTime{}
		t.calls[method] = c
	}
	c.n++
	c.total += time.Since(since)
}

func (t *timed) report() {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	var in time.Duration
	for m, c := range t.calls {
		parts = append(parts, fmt.Sprintf("%s %dx %.2fs", m, c.n, c.total.Seconds()))
		in += c.total
	}
	sort.Strings(parts)
	all := time.Since(t.began)
	fmt.Fprintf(os.Stderr, "suite: %.2fs served, %.2fs in calls (%s), %.2fs outside\n", all.Seconds(), in.Seconds(),
		strings.Join(parts, ", "), (all - in).Seconds())
}

func (t *timed) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	defer t.note("Stat", time.Now())
	return t.Snapshotter.Stat(ctx, key)
}

func (t *timed) Update(ctx context.Context, info snapshots.Info, paths ...string) (snapshots.Info, error) {
	defer t.note("Update", time.Now())
	return t.Snapshotter.Update(ctx, info, paths...)
}

func (t *timed) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	defer t.note("Usage", time.Now())
	return t.Snapshotter.Usage(ctx, key)
}

func (t *timed) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	defer t.note("Mounts", time.Now())
	return t.Snapshotter.Mounts(ctx, key)
}

func (t *timed) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	defer t.note("Prepare", time.Now())
	return t.Snapshotter.Prepare(ctx, key, parent, opts...)
}

func (t *timed) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	defer t.note("View", time.Now())
	return t.Snapshotter.View(ctx, key, parent, opts...)
}

func (t *timed) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	defer t.note("Commit", time.Now())
	return t.Snapshotter.Commit(ctx, name, key, opts...)
}

func (t *timed) Remove(ctx context.Context, key string) error {
	defer t.note("Remove", time.Now())
	return t.Snapshotter.Remove(ctx, key)
}

func (t *timed) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	defer t.note("Walk", time.Now())
	return t.Snapshotter.Walk(ctx, fn, filters...)
}

// zfsDataset makes (or, for a restarted server, finds) root's own dataset
// under parent, named by a hash of root.
func zfsDataset(parent, root string) (string, error) {
	h := fnv.New64a()
	h.Write([]byte(root))
	ds := fmt.Sprintf("%s/s%x", parent, h.Sum64())
	out, err := exec.Command("zfs", "create", "-o", "mountpoint=legacy", ds).CombinedOutput()
	if err != nil && exec.Command("zfs", "list", "-H", "-o", "name", ds).Run() != nil {
		return "", fmt.Errorf("zfs create %s: %v: %s", ds, err, out)
	}
	return ds, nil
}

// killable is a snapshotter whose server can be killed (SIGKILL) mid-run.
type killable struct {
	snapshots.Snapshotter
	kill func()
}

func startProcess(bin, driver, root string) (*killable, func() error, error) {
	sock := filepath.Join(root, "snapshotter.sock")
	args := []string{"--root", filepath.Join(root, "store"), "--address", sock}
	if driver != "" {
		args = append(args, "--driver", driver)
	}
	for _, opt := range strings.Fields(os.Getenv("DMTHIN_STORAGE_OPTS")) {
		args = append(args, "--storage-opt", opt)
	}
	if parent := os.Getenv("DMTHIN_ZFS_PARENT"); parent != "" {
		ds, err := zfsDataset(parent, root)
		if err != nil {
			return nil, nil, err
		}
		args = append(args, "--storage-opt", "zfs.fsname="+ds)
	}
	began := time.Now()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	// Dies with this test (a -test.timeout panic): a server left running
	// would hold the output pipe the caller reads to its end.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("dmthin-snapshotter did not stop within 30s of SIGTERM")
		}
	}

	// The socket file appears at bind(), before listen(): wait until a
	// connection is accepted (or the server exits). Opening a devicemapper
	// store under an emulated CPU (the vm tier) on a loaded machine took
	// more than 60 s: wait up to 5 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	go func() {
		select {
		case err := <-exited:
			exited <- err
			cancel()
		case <-ctx.Done():
		}
	}()
	// Poll with plain connects first: gRPC's own retry after a refused
	// connection backs off from 1 s, which was most of a case's time on
	// vfs (and more on devicemapper, where the store opens for seconds).
poll:
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			break poll
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Debian's grpc-go predates credentials/insecure.
	conn, err := grpc.DialContext(ctx, sock, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}))
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("connecting to dmthin-snapshotter on %s: %v", sock, err)
	}
	fmt.Fprintf(os.Stderr, "suite: dmthin-snapshotter serving after %.2fs\n", time.Since(began).Seconds())
	sn := &killable{
		Snapshotter: proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "dmthin"),
		kill: func() {
			_ = cmd.Process.Kill()
			<-exited
			conn.Close()
		},
	}
	return sn, func() error {
		cerr := conn.Close()
		stopping := time.Now()
		defer func() { fmt.Fprintf(os.Stderr, "suite: dmthin-snapshotter stopped in %.2fs\n", time.Since(stopping).Seconds()) }()
		if err := stop(); err != nil {
			return fmt.Errorf("dmthin-snapshotter: %v", err)
		}
		return cerr
	}, nil
}
