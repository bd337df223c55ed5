package sshdtest

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ControlMaster is OpenSSH's `ssh -M -N` connected to one of a lab's
// servers: a master that other ssh processes (and toworker) can run
// sessions through, on its control socket.
type ControlMaster struct {
	// Socket is the master's control socket (its ControlPath).
	Socket string
	host   string
	args   []string // -F and -S: what reaches the master
	cmd    *exec.Cmd
	exited chan struct{}
	stderr lockedBuffer
	once   sync.Once
}

// StartControlMaster starts `ssh -M -N` to the server named host with the
// lab's config and extra -o options (such as "SendEnv=LC_*"), and waits
// (up to 15 s) until it answers on its socket, a new file in a temporary
// directory of tb. tb's cleanup stops it.
func (l *Lab) StartControlMaster(tb testing.TB, host string, opts ...string) *ControlMaster {
	tb.Helper()
	m := &ControlMaster{Socket: filepath.Join(tb.TempDir(), "cm"), host: host, exited: make(chan struct{})}
	m.args = append(l.SSHArgs(), "-S", m.Socket)
	args := append(append([]string{}, m.args...), "-M", "-N", "-o", "ControlPersist=no")
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	m.cmd = exec.Command("ssh", append(args, host)...)
	m.cmd.SysProcAttr = sysProcAttr()
	m.cmd.Stderr = &m.stderr
	if err := m.cmd.Start(); err != nil {
		tb.Fatalf("sshdtest: starting ssh -M: %v", err)
	}
	go func() { m.cmd.Wait(); close(m.exited) }()
	tb.Cleanup(func() { m.Stop() })
	deadline := time.Now().Add(15 * time.Second)
	for !m.Check() {
		select {
		case <-m.exited:
			tb.Fatalf("sshdtest: ssh -M to %s exited: %s", host, m.Stderr())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sshdtest: ssh -M to %s did not answer on %s within 15 s: %s", host, m.Socket, m.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// Check reports whether the master answers `ssh -O check`.
func (m *ControlMaster) Check() bool {
	return exec.Command("ssh", append(append([]string{}, m.args...), "-O", "check", m.host)...).Run() == nil
}

// Command returns an *exec.Cmd running OpenSSH's ssh through the master,
// running remote on its host.
func (m *ControlMaster) Command(remote ...string) *exec.Cmd {
	args := append(append([]string{}, m.args...), m.host, "--")
	return exec.Command("ssh", append(args, remote...)...)
}

// SSHConnection returns $SSH_CONNECTION of a command run through the
// master: the client's address and port of the master's connection.
func (m *ControlMaster) SSHConnection() (string, error) {
	out, err := m.Command("echo $SSH_CONNECTION").Output()
	if err != nil {
		return "", fmt.Errorf("sshdtest: ssh through the master: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Stop stops the master as a user's exit would (SIGTERM: it ends its
// sessions and removes its socket), or with SIGKILL after 3 s, and waits
// for it. It may be called more than once.
func (m *ControlMaster) Stop() {
	m.once.Do(func() {
		pid := m.cmd.Process.Pid
		signalGroup(pid, sigTerm)
		select {
		case <-m.exited:
		case <-time.After(3 * time.Second):
			signalGroup(pid, sigKill)
			<-m.exited
		}
	})
}

// Stderr returns what the master wrote on its stderr.
func (m *ControlMaster) Stderr() string { return m.stderr.String() }

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// StaleSocket returns the path of a unix socket nothing listens on any
// more, as a master killed by SIGKILL leaves its ControlPath: connecting to
// it is refused.
func StaleSocket(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "stale")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	return path
}
