package remote_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
	"github.com/toworker/toworker/remote"
)

// sshConnection is $SSH_CONNECTION of a command run through m.
func sshConnection(t *testing.T, m *sshdtest.ControlMaster) string {
	t.Helper()
	c, err := m.SSHConnection()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeNoLoginConfig writes an ssh_config for srv whose only identity is
// a file that does not exist: a direct connection cannot log in, so a job
// that runs went through a ControlMaster.
func writeNoLoginConfig(t *testing.T, l *sshdtest.Lab, srv *sshdtest.Server, sock string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config")
	text := fmt.Sprintf(`Host %s
  HostName %s
  Port %d
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ControlMaster auto
  ControlPath %s
`, srv.Name, srv.Host, srv.Port, srv.User, filepath.Join(t.TempDir(), "no_such_key"), l.KnownHostsFile, sock)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestControlMaster: with ssh_config's ControlPath naming the socket of a
// running `ssh -M`, the agent runs in a session of that master's
// connection, as ssh's commands would: no login of its own (the config
// has no usable key), the same TCP connection as the master's (its
// $SSH_CONNECTION), with the first frames in LC_TOWORKER when the master
// sends LC_* (SendEnv) and on stdin when it does not. Closing the pool
// leaves the master running.
func TestControlMaster(t *testing.T) {
	l := newBootLab(t)
	srv, err := l.AddServer(sshdtest.Options{Name: "cm", ExtraConfig: []string{"AcceptEnv LC_*"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		sendEnv   []string
		envStarts int
	}{
		{"frames in LC_TOWORKER", []string{"SendEnv=LC_*"}, 1},
		{"frames on stdin", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := l.StartControlMaster(t, srv.Name, tc.sendEnv...)
			cfg := writeNoLoginConfig(t, l.Lab, srv, m.Socket)
			var warn lockedBuf
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for round := range 2 { // a second pool: a new session on the same master
				p, err := remote.NewPool(ctx, remote.PoolConfig{Hosts: []string{srv.Name}, MinWarm: -1,
					SSH: remote.SSHOptions{ConfigFile: cfg, Warn: &warn}})
				if err != nil {
					t.Fatal(err)
				}
				got, err := remote.CallOn(ctx, p, srv.Name, Getenv, "SSH_CONNECTION")
				if err != nil {
					p.Close()
					t.Fatalf("round %d: %v", round, err)
				}
				if want := sshConnection(t, m); got != want {
					t.Errorf("round %d: the agent's SSH_CONNECTION is %q, the master's %q: not the master's connection", round, got, want)
				}
				if st := p.Stats(); st.Total.EnvStarts != tc.envStarts || st.Total.Uploads > 1 {
					t.Errorf("round %d: %d env starts (want %d), %d uploads", round, st.Total.EnvStarts, tc.envStarts, st.Total.Uploads)
				}
				pids, err := remote.CallOn(ctx, p, srv.Name, Pids, struct{}{})
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				// The session's end stops the agent: its boss and worker.
				waitAllGone(t, "the agent after the pool closed", pids[:], nil, 10*time.Second)
				if !m.Check() {
					t.Fatalf("round %d: the master stopped when the pool closed", round)
				}
			}
			if w := warn.String(); w != "" {
				t.Errorf("warnings: %s", w)
			}

			// The same config without the master's socket cannot log in:
			// what passed above went through the master.
			p, err := remote.NewPool(ctx, remote.PoolConfig{Hosts: []string{srv.Name}, MinWarm: -1,
				SSH: remote.SSHOptions{ConfigFile: cfg, Warn: &warn, Options: []string{"ControlPath=none"}}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			_, err = p.Submit(ctx, remote.Job{Host: srv.Name, Func: Noop.Name(), NoRetry: true}).Wait()
			if err == nil || !strings.Contains(err.Error(), "Permission denied") {
				t.Errorf("without the master: %v, want an authentication failure", err)
			}
		})
	}
}

// TestControlMasterGone: a master that exits while a job runs fails the
// job as a lost connection (retryable), at once; the next connection
// finds no master and connects directly.
func TestControlMasterGone(t *testing.T) {
	l := newBootLab(t)
	srv, err := l.AddServer(sshdtest.Options{Name: "cmgone"})
	if err != nil {
		t.Fatal(err)
	}
	m := l.StartControlMaster(t, srv.Name)
	var warn lockedBuf
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := remote.NewPool(ctx, remote.PoolConfig{Hosts: []string{srv.Name}, MinWarm: -1,
		SSH: remote.SSHOptions{ConfigFile: l.ConfigFile, Warn: &warn, Options: []string{"ControlPath=" + m.Socket}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	viaMaster, err := remote.CallOn(ctx, p, srv.Name, Getenv, "SSH_CONNECTION")
	if err != nil {
		t.Fatal(err)
	}
	if want := sshConnection(t, m); viaMaster != want {
		t.Fatalf("SSH_CONNECTION %q, the master's %q", viaMaster, want)
	}
	running := make(chan string, 1)
	run := p.Submit(ctx, remote.Job{Host: srv.Name, Func: Sleep.Name(), Data: 30, NoRetry: true,
		OnOutput: func(l string) { running <- l }})
	var pids []int
	select {
	case l := <-running:
		pids = parsePids(t, l) // the worker and its sleep
	case <-ctx.Done():
		t.Fatal("the job did not start")
	}
	start := time.Now()
	m.Stop() // SIGTERM, as a user's exit would
	_, err = run.Wait()
	var fe *remote.FailureError
	if !errors.As(err, &fe) {
		t.Fatalf("job on a master that exited: %v, want a *FailureError", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the failure took %v", took)
	}
	// The session's end stops the agent, which kills the job's processes.
	waitAllGone(t, "the job after its master exited", pids, nil, 10*time.Second)
	// ssh removes its socket as it exits; a later connection is direct.
	direct, err := remote.CallOn(ctx, p, srv.Name, Getenv, "SSH_CONNECTION")
	if err != nil {
		t.Fatal(err)
	}
	if direct == viaMaster {
		t.Errorf("SSH_CONNECTION after the master exited is still the master's: %q", direct)
	}
	if w := warn.String(); w != "" {
		t.Errorf("warnings: %s", w)
	}
}

// TestControlMasterUnusable: where ControlPath names no working master the
// connection is made directly, as ssh makes it: silently for a missing or
// stale socket; with a warning naming the socket for one that does not
// speak the protocol, and for a master that refuses the session (here:
// sshd's MaxSessions, which a master's sessions count against).
func TestControlMasterUnusable(t *testing.T) {
	l := newBootLab(t)
	srv, err := l.AddServer(sshdtest.Options{Name: "cmbad", ExtraConfig: []string{"MaxSessions 1"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	stale := sshdtest.StaleSocket(t)

	mute := filepath.Join(dir, "mute.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: mute, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts, says something that is not the protocol's hello, hangs up
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-not-a-master\r\n"))
			c.Close()
		}
	}()

	// A master whose one session (MaxSessions 1) is taken.
	m := l.StartControlMaster(t, srv.Name)
	hold := m.Command("echo up; exec sleep 60")
	hold.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	up, err := hold.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-hold.Process.Pid, syscall.SIGKILL); hold.Wait() })
	if line, err := bufio.NewReader(up).ReadString('\n'); line != "up\n" {
		t.Fatalf("the session holding the master's one session did not start: %q, %v", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, path string
		warn       string // "" for none
	}{
		{"missing", filepath.Join(dir, "none.sock"), ""},
		{"stale", stale, ""},
		{"not a master", mute, "ControlMaster: control socket " + mute},
		{"session refused", m.Socket, "ControlMaster: control socket " + m.Socket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var warn lockedBuf
			p, err := remote.NewPool(ctx, remote.PoolConfig{Hosts: []string{srv.Name}, MinWarm: -1,
				SSH: remote.SSHOptions{ConfigFile: l.ConfigFile, Warn: &warn, Options: []string{"ControlPath=" + tc.path}}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, err := remote.CallOn(ctx, p, srv.Name, Noop, struct{}{}); err != nil {
				t.Fatal(err)
			}
			w := warn.String()
			switch {
			case tc.warn == "" && w != "":
				t.Errorf("warned: %s", w)
			case tc.warn != "" && (!strings.Contains(w, tc.warn) || !strings.Contains(w, "connecting directly")):
				t.Errorf("warning %q, want one naming %q", w, tc.warn)
			}
			t.Logf("warning: %s", strings.TrimSpace(w))
		})
	}
}
