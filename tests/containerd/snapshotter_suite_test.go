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
//   DMTHIN_DRIVER        graph driver (overlay, vfs, btrfs, devicemapper)
//   DMTHIN_STORAGE_OPTS  driver options, KEY=VALUE separated by spaces
package snapshottersuite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
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
	return sn, cleanup, nil
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
	cmd := exec.Command(bin, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
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
	// store under an emulated CPU (the vm tier) can take seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		select {
		case err := <-exited:
			exited <- err
			cancel()
		case <-ctx.Done():
		}
	}()
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
		if err := stop(); err != nil {
			return fmt.Errorf("dmthin-snapshotter: %v", err)
		}
		return cerr
	}, nil
}
