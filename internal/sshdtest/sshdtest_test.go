package sshdtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshRun runs OpenSSH's ssh against the lab host alias name, bounded in
// time, and returns its trimmed stdout.
func sshRun(t *testing.T, l *Lab, name string, remote ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append(l.SSHArgs(), "-o", "ConnectTimeout=5", name, "--")
	args = append(args, remote...)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Logf("ssh %s %q: %v; stderr: %s", name, remote, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), err
}

func needSSH(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatalf("OpenSSH client not found: run `make setup` (apt-get install openssh-client): %v", err)
	}
}

func TestLabOpenSSH(t *testing.T) {
	needSSH(t)
	l := NewLab(t, LabOptions{Hosts: 2})
	if len(l.Servers) != 2 {
		t.Fatalf("got %d servers, want 2", len(l.Servers))
	}
	h1, h2 := l.Server("h1"), l.Server("h2")
	if h1 == nil || h2 == nil || l.Server("h3") != nil {
		t.Fatalf("Server lookup: h1=%v h2=%v h3=%v", h1, h2, l.Server("h3"))
	}
	if h1.Host != "127.0.1.1" || h2.Host != "127.0.1.2" {
		t.Errorf("hosts: %s %s, want 127.0.1.1 127.0.1.2", h1.Host, h2.Host)
	}
	if h1.CacheDir == h2.CacheDir {
		t.Errorf("servers share CacheDir %s", h1.CacheDir)
	}

	out, err := sshRun(t, l, "h1", "echo", "hi")
	if err != nil || out != "hi" {
		t.Fatalf("ssh h1 echo hi = %q, %v\nsshd log:\n%s", out, err, h1.Log())
	}
	out, err = sshRun(t, l, "h2", "echo $XDG_CACHE_HOME")
	if err != nil || out != h2.CacheDir {
		t.Fatalf("ssh h2 'echo $XDG_CACHE_HOME' = %q, %v; want %q\nsshd log:\n%s", out, err, h2.CacheDir, h2.Log())
	}

	// The files a test using HOME=HomeDir relies on.
	for _, f := range []string{".ssh/config", ".ssh/known_hosts", ".ssh/id_ed25519", ".ssh/id_ed25519.pub"} {
		if _, err := os.Stat(filepath.Join(l.HomeDir, f)); err != nil {
			t.Errorf("HomeDir: %v", err)
		}
	}
	if fi, err := os.Stat(l.IdentityFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("IdentityFile: %v, %v; want mode 0600", fi, err)
	}
	kh, _ := os.ReadFile(l.KnownHostsFile)
	if want := "[" + h2.Host + "]:"; !strings.Contains(string(kh), want) {
		t.Errorf("known_hosts lacks %q:\n%s", want, kh)
	}
}

func TestKillRestart(t *testing.T) {
	needSSH(t)
	l := NewLab(t, LabOptions{Hosts: 2})
	h1 := l.Server("h1")
	if out, err := sshRun(t, l, "h1", "echo", "up"); err != nil || out != "up" {
		t.Fatalf("before Kill: %q, %v\n%s", out, err, h1.Log())
	}
	oldPID, port := h1.PID(), h1.Port
	if err := h1.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := h1.Kill(); err != nil { // idempotent
		t.Fatal(err)
	}
	if procAlive(oldPID) {
		t.Errorf("sshd pid %d still alive after Kill", oldPID)
	}
	if out, err := sshRun(t, l, "h1", "echo", "up"); err == nil {
		t.Fatalf("ssh after Kill succeeded: %q", out)
	}
	// The other host is unaffected.
	if out, err := sshRun(t, l, "h2", "echo", "up"); err != nil || out != "up" {
		t.Fatalf("h2 after killing h1: %q, %v", out, err)
	}
	if err := h1.Restart(); err != nil {
		t.Fatal(err)
	}
	if h1.Port != port || h1.PID() == oldPID {
		t.Errorf("after Restart: port %d (was %d), pid %d (was %d)", h1.Port, port, h1.PID(), oldPID)
	}
	if err := h1.Restart(); err == nil {
		t.Error("Restart of a running server succeeded")
	}
	if out, err := sshRun(t, l, "h1", "echo", "back"); err != nil || out != "back" {
		t.Fatalf("after Restart: %q, %v\n%s", out, err, h1.Log())
	}
	// Close then Restart works too.
	if err := h1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h1.Restart(); err != nil {
		t.Fatal(err)
	}
	if out, err := sshRun(t, l, "h1", "echo", "again"); err != nil || out != "again" {
		t.Fatalf("after Close+Restart: %q, %v\n%s", out, err, h1.Log())
	}
}

// TestKillDropsConnections checks that Kill also ends per-connection sshd
// processes, so an open session sees the host die.
func TestKillDropsConnections(t *testing.T) {
	needSSH(t)
	l := NewLab(t, LabOptions{})
	h1 := l.Server("h1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// `cat` exits at EOF once sshd's end of its stdin is gone.
	cmd := exec.CommandContext(ctx, "ssh", append(l.SSHArgs(), "h1", "cat")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	handlers := waitHandlers(t, h1)
	if err := h1.Kill(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("ssh session survived Kill without error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ssh session still open 10 s after Kill")
	}
	for _, h := range handlers {
		if h.alive() {
			t.Errorf("per-connection sshd %d alive after Kill", h.pid)
		}
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	needSSH(t)
	l, err := StartLab(LabOptions{Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h1 := l.Server("h1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(l.SSHArgs(), "h1", "cat")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	handlers := waitHandlers(t, h1)
	pids := []int{l.Servers[0].PID(), l.Servers[1].PID()}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	for _, pid := range pids {
		if procAlive(pid) {
			t.Errorf("sshd listener %d alive after Close", pid)
		}
	}
	for _, h := range handlers {
		if h.alive() {
			t.Errorf("per-connection sshd %d alive after Close", h.pid)
		}
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s not removed: %v", l.Dir, err)
	}
}

// waitHandlers waits until s has at least one per-connection sshd.
func waitHandlers(t *testing.T, s *Server) []proc {
	t.Helper()
	for i := 0; i < 500; i++ {
		if hs := connectionHandlers(s.PID()); len(hs) > 0 {
			// Give the session time to start its command.
			time.Sleep(200 * time.Millisecond)
			return connectionHandlers(s.PID())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no per-connection sshd appeared\n%s", s.Log())
	return nil
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

func TestGoClient(t *testing.T) {
	l := NewLab(t, LabOptions{Hosts: 2})
	client, err := l.Dial("h1")
	if err != nil {
		t.Fatalf("Dial h1: %v\n%s", err, l.Server("h1").Log())
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output("echo ok")
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("echo ok = %q, %v", out, err)
	}
}

// TestGoClientFromFiles does what a Go client does from the files alone:
// knownhosts.New(KnownHostsFile) and the key in IdentityFile.
func TestGoClientFromFiles(t *testing.T) {
	l := NewLab(t, LabOptions{})
	h1 := l.Server("h1")
	keyPEM, err := os.ReadFile(l.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := knownhosts.New(l.KnownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ssh.Dial("tcp", h1.Addr(), &ssh.ClientConfig{
		User:            h1.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hk,
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, h1.Log())
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output("echo ok")
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("echo ok = %q, %v", out, err)
	}
}

func TestExtraConfigOverrides(t *testing.T) {
	needSSH(t)
	l := NewLab(t, LabOptions{ExtraConfig: []string{"MaxSessions 3", "SetEnv=SSHDTEST_X=1 \"SSHDTEST_Y=a b\""}})
	cfg, err := os.ReadFile(l.Server("h1").configFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfg), "MaxSessions 64") {
		t.Errorf("default MaxSessions not overridden:\n%s", cfg)
	}
	out, err := sshRun(t, l, "h1", "echo $SSHDTEST_X $SSHDTEST_Y $XDG_CACHE_HOME")
	if want := "1 a b " + l.Server("h1").CacheDir; err != nil || out != want {
		t.Fatalf("got %q, %v; want %q", out, err, want)
	}
}

func TestBadConfig(t *testing.T) {
	_, err := StartLab(LabOptions{ExtraConfig: []string{"NoSuchKeyword yes"}})
	if err == nil || !strings.Contains(err.Error(), "invalid sshd config") {
		t.Fatalf("got %v, want an invalid sshd config error", err)
	}
}

func TestBadHost(t *testing.T) {
	l := NewLab(t, LabOptions{Hosts: -1})
	if _, err := l.AddServer(Options{Host: "10.0.0.1"}); err == nil {
		t.Fatal("AddServer accepted a non-loopback host")
	}
	s, err := l.AddServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "h1" || s.Host != "127.0.0.1" {
		t.Errorf("defaults: name %q host %q", s.Name, s.Host)
	}
	if _, err := l.AddServer(Options{Name: "h1"}); err == nil {
		t.Error("AddServer accepted a duplicate name")
	}
}

// TestOtherUser logs in as a throwaway user. It creates a system user, so
// it runs only as root with SSHDTEST_CREATE_USERS=1; it removes the user
// again if it created it.
func TestOtherUser(t *testing.T) {
	needSSH(t)
	if os.Getenv("SSHDTEST_CREATE_USERS") != "1" || os.Geteuid() != 0 {
		t.Skip("creates a system user: set SSHDTEST_CREATE_USERS=1 and run as root")
	}
	const name = "sshdtest-u1"
	pw, err := lookupPasswd(name)
	if err != nil {
		t.Fatal(err)
	}
	if pw == nil {
		t.Cleanup(func() { exec.Command("userdel", "-r", name).Run() })
	}
	if err := EnsureUser(name, "/bin/sh"); err != nil {
		t.Fatal(err)
	}
	l := NewLab(t, LabOptions{Hosts: -1})
	s, err := l.AddServer(Options{User: name, LoginShell: "/bin/bash"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := sshRun(t, l, s.Name, "id -un; echo $SHELL; echo $XDG_CACHE_HOME; touch $XDG_CACHE_HOME/w && echo w")
	want := strings.Join([]string{name, "/bin/bash", s.CacheDir, "w"}, "\n")
	if err != nil || out != want {
		t.Fatalf("got %q, %v; want %q\n%s", out, err, want, s.Log())
	}
}

// Connections counts the connections being handled: one per open client,
// none once the clients have gone (and the lab's own readiness probes have
// been handled).
func TestConnections(t *testing.T) {
	l := NewLab(t, LabOptions{Hosts: 2})
	settle := func(want int) int {
		deadline := time.Now().Add(5 * time.Second)
		n := l.Connections()
		for n != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			n = l.Connections()
		}
		return n
	}
	if n := settle(0); n != 0 {
		t.Fatalf("Connections with no client = %d", n)
	}
	var clients []*ssh.Client
	for _, h := range []string{"h1", "h2", "h2"} {
		c, err := l.Dial(h)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if n := l.Connections(); n != 3 {
		t.Errorf("Connections with 3 clients = %d", n)
	}
	if n1, n2 := l.Server("h1").Connections(), l.Server("h2").Connections(); n1 != 1 || n2 != 2 {
		t.Errorf("per server: h1 %d, h2 %d; want 1 and 2", n1, n2)
	}
	for _, c := range clients {
		c.Close()
	}
	if n := settle(0); n != 0 {
		t.Errorf("Connections 5 s after the clients closed = %d", n)
	}
}
