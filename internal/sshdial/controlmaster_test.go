//go:build unix

package sshdial

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toworker/toworker/internal/sshdtest"
	"github.com/toworker/toworker/internal/sshmux"
)

// TestJumpThroughControlMaster: a ProxyJump host with a ControlMaster
// running (its ControlPath) is not logged in to again: the connection to
// the host behind it is asked of the master, as ssh -J's ssh -W asks it.
// The config gives the jump host no key, so only the master can reach it;
// its sshd handles the master's connection only. Also a second hop
// through the first's master, a stale socket (ssh connects to the jump
// host itself, silently), a socket that is not a master (the same, with
// a warning), and a forwarding the master refuses (an error, as for ssh).
func TestJumpThroughControlMaster(t *testing.T) {
	testEnv(t)
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: 3})
	sock := lab.StartControlMaster(t, "h1").Socket
	h1 := lab.Server("h1")

	dir := t.TempDir()
	stale := sshdtest.StaleSocket(t)
	closedPort := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}()

	var b strings.Builder
	host := func(alias string, s *sshdtest.Server, lines ...string) {
		fmt.Fprintf(&b, "Host %s\n    HostName %s\n    Port %d\n    User %s\n", alias, s.Host, s.Port, s.User)
		for _, l := range lines {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	host("bastion", h1, "ControlPath "+sock) // no key: only its master gets in
	host("bastion-stale", h1, "ControlPath "+stale, "IdentityFile "+lab.IdentityFile)
	host("bastion-notmaster", h1, "ControlPath "+lab.IdentityFile, "IdentityFile "+lab.IdentityFile)
	host("h2", lab.Server("h2"), "ProxyJump bastion", "IdentityFile "+lab.IdentityFile)
	host("h3", lab.Server("h3"), "ProxyJump bastion,h2-nojump", "IdentityFile "+lab.IdentityFile)
	host("h2-nojump", lab.Server("h2"), "ProxyJump none", "IdentityFile "+lab.IdentityFile)
	host("h2-stale", lab.Server("h2"), "ProxyJump bastion-stale", "IdentityFile "+lab.IdentityFile)
	host("h2-notmaster", lab.Server("h2"), "ProxyJump bastion-notmaster", "IdentityFile "+lab.IdentityFile)
	fmt.Fprintf(&b, "Host closed\n    HostName 127.0.0.1\n    Port %d\n    ProxyJump bastion\n", closedPort)
	fmt.Fprintf(&b, "Host *\n    IdentitiesOnly yes\n    UserKnownHostsFile %q\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n", lab.KnownHostsFile)
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The lab's known_hosts names h2 and h3 by address, which is what a
	// connection through a jump host checks too.

	for _, tc := range []struct {
		alias   string
		h1Conns int    // connections h1's sshd handles while connected
		warn    string // what the warning names; "" for none
	}{
		{"h2", 1, ""},
		{"h3", 1, ""},
		{"h2-stale", 2, ""},
		{"h2-notmaster", 2, "jump host bastion-notmaster: ControlMaster: control socket " + lab.IdentityFile},
	} {
		t.Run(tc.alias, func(t *testing.T) {
			var warn syncBuffer
			c := mustConnect(t, tc.alias, Options{ConfigFile: cfg, Warn: &warn})
			if got := run(t, c, "echo ok"); got != "ok\n" {
				t.Errorf("through the jump host: %q", got)
			}
			if n := h1.Connections(); n != tc.h1Conns {
				t.Errorf("h1's sshd handles %d connections, want %d", n, tc.h1Conns)
			}
			w := warn.String()
			if tc.warn == "" && w != "" || tc.warn != "" && (!strings.Contains(w, tc.warn) || !strings.Contains(w, "connecting to it directly")) {
				t.Errorf("warnings %q, want one naming %q", w, tc.warn)
			}
			c.Close()
		})
	}

	t.Run("refused", func(t *testing.T) {
		_, err := connect(t, "closed", Options{ConfigFile: cfg})
		var refused *sshmux.RefusedError
		if !errors.As(err, &refused) {
			t.Fatalf("through the master to a closed port: %v, want a *sshmux.RefusedError", err)
		}
		t.Log(err)
	})

}
