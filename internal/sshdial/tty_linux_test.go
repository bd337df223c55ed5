//go:build linux

package sshdial

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
	"golang.org/x/sys/unix"
)

// openPTY returns the master and slave ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// answer types line into the terminal once prompt has been written to w.
func answer(t *testing.T, master *os.File, w *syncBuffer, prompt, line string) {
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(w.String(), prompt) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		master.Write([]byte(line + "\n"))
	}()
}

// TestTerminalPrompts covers the prompts that need a terminal: the
// passphrase of an encrypted identity file, and StrictHostKeyChecking=ask.
func TestTerminalPrompts(t *testing.T) {
	home := testEnv(t)
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: 1})

	t.Run("passphrase", func(t *testing.T) {
		master, slave := openPTY(t)
		enc := writeKey(t, t.TempDir(), "id_enc", labKey(t, lab), "secret")
		cfg := labConfig(t, lab, "IdentityFile "+enc, "BatchMode no")
		var w syncBuffer
		answer(t, master, &w, "Enter passphrase for key '"+enc+"'", "secret")
		c := mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home, Stdin: slave, Warn: &w})
		run(t, c, "true")
	})

	t.Run("passphrase asked once for connections at once", func(t *testing.T) {
		master, slave := openPTY(t)
		enc := writeKey(t, t.TempDir(), "id_enc", labKey(t, lab), "secret")
		cfg := labConfig(t, lab, "IdentityFile "+enc, "BatchMode no")
		var w syncBuffer
		prompt := "Enter passphrase for key '" + enc + "'"
		answer(t, master, &w, prompt, "secret")
		const n = 3
		errs := make(chan error, n)
		for range n {
			go func() {
				c, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home, Stdin: slave, Warn: &w})
				if err == nil {
					c.Close()
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("connection: %v\nterminal:\n%s", err, w.String())
			}
		}
		if k := strings.Count(w.String(), prompt); k != 1 {
			t.Fatalf("%d connections at once asked for the passphrase %d times, want once:\n%s", n, k, w.String())
		}
	})

	t.Run("BatchMode never prompts", func(t *testing.T) {
		_, slave := openPTY(t)
		enc := writeKey(t, t.TempDir(), "id_enc", labKey(t, lab), "secret")
		cfg := labConfig(t, lab, "IdentityFile "+enc) // BatchMode yes
		_, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home, Stdin: slave})
		if !errors.Is(err, ErrKeyEncrypted) {
			t.Fatalf("got %v, want KeyFileError", err)
		}
	})

	t.Run("ask", func(t *testing.T) {
		master, slave := openPTY(t)
		kh := filepath.Join(t.TempDir(), "known_hosts")
		cfg := labConfig(t, lab, "IdentityFile "+lab.IdentityFile, "UserKnownHostsFile "+kh,
			"StrictHostKeyChecking ask", "BatchMode no")
		var w syncBuffer
		answer(t, master, &w, "continue connecting", "no")
		if _, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home, Stdin: slave, Warn: &w}); !errors.As(err, new(*HostKeyError)) {
			t.Fatalf("answered no: got %v", err)
		}
		var w2 syncBuffer
		answer(t, master, &w2, "continue connecting", "yes")
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home, Stdin: slave, Warn: &w2}), "true")
		if b, err := os.ReadFile(kh); err != nil || len(b) == 0 {
			t.Fatalf("key not recorded: %v", err)
		}
	})
}
