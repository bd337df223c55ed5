package remote_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
	"github.com/toworker/toworker/remote"
)

// settleConnections waits (up to 5 s) until srv's sshd handles want
// connections, and returns how many it handles.
func settleConnections(srv *sshdtest.Server, want int) int {
	deadline := time.Now().Add(5 * time.Second)
	n := srv.Connections()
	for n != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = srv.Connections()
	}
	return n
}

// A pool whose hosts are all behind one jump host makes one connection to
// it, not one per host, and closes it with the pool.
func TestPoolSharesJumpHost(t *testing.T) {
	jump := lab.Server("h1")
	if n := settleConnections(jump, 0); n != 0 {
		t.Fatalf("h1 still handles %d connections from earlier tests", n)
	}
	hosts := []string{"h2", "h3", "h4"}
	ctx := context.Background()
	p, err := remote.NewPool(ctx, remote.PoolConfig{
		Hosts:  hosts,
		SSH:    remote.SSHOptions{ConfigFile: lab.ConfigFile, JumpHosts: "h1"},
		Stdout: io.Discard, Stderr: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runs := make([]*remote.Run, len(hosts))
	for i, h := range hosts {
		runs[i] = p.Submit(ctx, remote.Job{Host: h, Func: Noop.Name()})
	}
	for i, r := range runs {
		if _, err := r.Wait(); err != nil {
			t.Fatalf("call on %s through h1: %v", hosts[i], err)
		}
	}
	if n := jump.Connections(); n != 1 {
		t.Errorf("h1 handles %d connections for %d hosts behind it, want 1", n, len(hosts))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := settleConnections(jump, 0); n != 0 {
		t.Errorf("h1 still handles %d connections after the pool closed", n)
	}
}
