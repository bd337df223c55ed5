//go:build unix

package sshmux

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
)

// startMaster starts OpenSSH's ssh as a ControlMaster to the lab's host and
// returns its control socket once it listens. The master forwards
// LC_TOWORKER_TEST (SendEnv).
func startMaster(t *testing.T, lab *sshdtest.Lab, host string) string {
	t.Helper()
	return lab.StartControlMaster(t, host, "SendEnv=LC_TOWORKER_TEST").Socket
}

// run opens a session running cmd, writes stdin to it and closes its
// Stdin, and returns its output and exit status.
func run(t *testing.T, sock, cmd string, env []string, stdin []byte) (stdout, stderr string, status int) {
	t.Helper()
	s, err := Open(openCtx(t), sock, cmd, env)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	guard(t, s)
	var wg sync.WaitGroup
	var errb []byte
	wg.Go(func() {
		if _, err := s.Stdin.Write(stdin); err != nil {
			t.Errorf("writing Stdin: %v", err)
		}
		s.Stdin.Close()
	})
	wg.Go(func() { errb, _ = io.ReadAll(s.Stderr) })
	outb, err := io.ReadAll(s.Stdout)
	if err != nil {
		t.Errorf("reading Stdout: %v", err)
	}
	wg.Wait()
	if err := s.OpenErr(); err != nil {
		t.Errorf("OpenErr: %v", err)
	}
	status, err = waitDone(t, s)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return string(outb), string(errb), status
}

// Sessions through a real OpenSSH ControlMaster connected to a real sshd.
func TestMaster(t *testing.T) {
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{ExtraConfig: []string{"AcceptEnv LC_TOWORKER_*"}})
	sock := startMaster(t, lab, "h1")

	t.Run("exit status and output", func(t *testing.T) {
		out, errs, status := run(t, sock, "echo out; echo err >&2; exit 3", nil, nil)
		if out != "out\n" || errs != "err\n" || status != 3 {
			t.Errorf("got stdout %q, stderr %q, status %d; want %q, %q, 3", out, errs, status, "out\n", "err\n")
		}
	})

	t.Run("stdin", func(t *testing.T) {
		in := make([]byte, 1<<20)
		rand.Read(in)
		out, _, status := run(t, sock, "cat", nil, in)
		if !bytes.Equal([]byte(out), in) || status != 0 {
			t.Errorf("cat gave back %d bytes (equal: %v), status %d; want the %d bytes sent, status 0",
				len(out), bytes.Equal([]byte(out), in), status, len(in))
		}
	})

	t.Run("environment", func(t *testing.T) {
		// sshd accepts both variables: the master forwards only the one
		// its SendEnv names.
		env := []string{"LC_TOWORKER_TEST=hello world", "LC_TOWORKER_OTHER=x"}
		out, _, _ := run(t, sock, `printf '%s|%s\n' "$LC_TOWORKER_TEST" "${LC_TOWORKER_OTHER-unset}"`, env, nil)
		if want := "hello world|unset\n"; out != want {
			t.Errorf("remote environment %q, want %q", out, want)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		for i := range 8 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				out, _, status := run(t, sock, fmt.Sprintf("echo %d; exit %d", i, i), nil, nil)
				if out != fmt.Sprintf("%d\n", i) || status != i {
					t.Errorf("session %d: stdout %q, status %d", i, out, status)
				}
			})
		}
	})

	t.Run("no exit status", func(t *testing.T) {
		// Killed by a signal: sshd sends exit-signal, which the master
		// does not pass on.
		s, err := Open(openCtx(t), sock, "kill -9 $$", nil)
		if err != nil {
			t.Fatal(err)
		}
		guard(t, s)
		io.Copy(io.Discard, s.Stdout)
		if status, err := waitDone(t, s); status != -1 || err == nil || !strings.Contains(err.Error(), "without an exit status") {
			t.Errorf("Wait = %d, %v; want -1 and an error saying there was no exit status", status, err)
		}
		if err := s.OpenErr(); err != nil {
			t.Errorf("OpenErr: %v", err)
		}
	})

	// Close returns at once, whatever the command does. A command that
	// writes notices the end of its session and goes away; a silent one
	// (sleep) runs on, as it would after ssh's end: sshd does not signal
	// the commands of sessions without a terminal.
	for _, tc := range []struct {
		name, cmd string
		goesAway  bool
	}{
		{"close writing", "echo $$; while /bin/echo tick; do sleep 0.05; done", true},
		{"close sleeping", "echo $$; exec sleep 30", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(openCtx(t), sock, tc.cmd, nil)
			if err != nil {
				t.Fatal(err)
			}
			guard(t, s)
			line, err := bufio.NewReader(s.Stdout).ReadString('\n')
			pid, perr := strconv.Atoi(strings.TrimSpace(line))
			if err != nil || perr != nil || pid <= 1 {
				t.Fatalf("remote pid line %q: %v %v", line, err, perr)
			}
			t.Cleanup(func() {
				// Ours: the remote command of this test.
				if syscall.Kill(pid, 0) == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			start := time.Now()
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Close took %v", d)
			}
			if status, err := s.Wait(); status != -1 || !errors.Is(err, net.ErrClosed) {
				t.Errorf("Wait after Close = %d, %v; want -1 and net.ErrClosed", status, err)
			}
			if !tc.goesAway {
				return
			}
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			deadline := time.After(10 * time.Second)
			for syscall.Kill(pid, 0) == nil {
				select {
				case <-deadline:
					t.Fatalf("remote command (pid %d) still runs 10 s after Close", pid)
				case <-tick.C:
				}
			}
		})
	}

	t.Run("no master", func(t *testing.T) {
		_, err := Open(openCtx(t), sock+".missing", "true", nil)
		if !NoMaster(err) {
			t.Errorf("Open of a missing socket: %v, NoMaster false", err)
		}
	})
}

// A session that the master's server refuses (MaxSessions reached) gives a
// *RefusedError, and nothing runs.
func TestMasterRefused(t *testing.T) {
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{ExtraConfig: []string{"MaxSessions 1"}})
	sock := startMaster(t, lab, "h1")

	first, err := Open(openCtx(t), sock, "cat", nil)
	if err != nil {
		t.Fatal(err)
	}
	guard(t, first)
	if err := first.OpenErr(); err != nil {
		t.Fatalf("first session: %v", err)
	}

	marker := filepath.Join(t.TempDir(), "ran")
	second, err := Open(openCtx(t), sock, "touch "+marker, nil)
	if err != nil {
		t.Fatal(err)
	}
	guard(t, second)
	select {
	case <-second.Opened():
	case <-time.After(20 * time.Second):
		t.Fatal("no answer within 20 s")
	}
	var re *RefusedError
	if err := second.OpenErr(); !errors.As(err, &re) || re.Path != sock || re.Denied || !strings.Contains(re.Reason, "refused") {
		t.Fatalf("second session: OpenErr = %v (%+v), want a *RefusedError of the server's refusal", err, re)
	}
	t.Logf("refusal: %v", re)
	if status, err := waitDone(t, second); status != -1 || err != re {
		t.Errorf("Wait = %d, %v; want -1 and the OpenErr", status, err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused command ran: %v", err)
	}

	first.Stdin.Close()
	io.Copy(io.Discard, first.Stdout)
	if status, err := waitDone(t, first); status != 0 || err != nil {
		t.Errorf("first session: Wait = %d, %v; want 0, nil", status, err)
	}
}

// Forwardings (ssh -W) through a real ControlMaster: to the lab's other
// sshd, whose version line comes back through it, and to a port where
// nothing listens, which the master refuses.
func TestMasterForward(t *testing.T) {
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: 2})
	sock := startMaster(t, lab, "h1")
	h2 := lab.Server("h2")
	c, err := Forward(openCtx(t), sock, h2.Host, h2.Port)
	if err != nil {
		t.Fatalf("Forward to h2: %v", err)
	}
	if _, err := io.WriteString(c, "SSH-2.0-sshmux_test\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "SSH-2.0-OpenSSH") {
		t.Errorf("h2 through the master said %q (%v), want its version line", line, err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	_, err = Forward(openCtx(t), sock, "127.0.0.1", port)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Path != sock {
		t.Errorf("Forward to a closed port: %v, want a *RefusedError naming %s", err, sock)
	}
	if _, err := Forward(openCtx(t), sock, "127.0.0.1", 0); err == nil || !strings.Contains(err.Error(), "invalid port 0") {
		t.Errorf("Forward to port 0: %v, want an error naming the port", err)
	}
}
