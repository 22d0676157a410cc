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
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
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

// start runs dmthin-snapshotter on root and connects the proxy client; the
// cleanup closes the connection and stops the server with SIGTERM.
func start(bin, driver, root string) (snapshots.Snapshotter, func() error, error) {
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
	// connection is accepted (or the server exits).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
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
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "dmthin")
	return sn, func() error {
		cerr := conn.Close()
		if err := stop(); err != nil {
			return fmt.Errorf("dmthin-snapshotter: %v", err)
		}
		return cerr
	}, nil
}
