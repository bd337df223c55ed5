package sshdial

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEnv keeps the developer's agent and home out of the tests.
func testEnv(t *testing.T) string {
	t.Helper()
	t.Setenv("SSH_AUTH_SOCK", "")
	home := t.TempDir()
	t.Setenv("HOME", home)
	return home
}

// labConfig writes a client config for the lab's servers: the given lines
// first (so that they win), then HostName, Port, User, the lab's
// known_hosts, StrictHostKeyChecking yes and BatchMode yes. No
// IdentityFile unless given.
func labConfig(t *testing.T, lab *sshdtest.Lab, lines ...string) string {
	t.Helper()
	var b strings.Builder
	for _, s := range lab.Servers {
		fmt.Fprintf(&b, "Host %s\n", s.Name)
		for _, l := range lines {
			fmt.Fprintf(&b, "    %s\n", l)
		}
		fmt.Fprintf(&b, "    HostName %s\n    Port %d\n    User %s\n", s.Host, s.Port, s.User)
		fmt.Fprintf(&b, "    UserKnownHostsFile %q\n    GlobalKnownHostsFile /dev/null\n", lab.KnownHostsFile)
		fmt.Fprintf(&b, "    StrictHostKeyChecking yes\n    BatchMode yes\n")
	}
	f := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// labKey returns the lab client's private key.
func labKey(t *testing.T, lab *sshdtest.Lab) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(lab.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	switch k := k.(type) {
	case *ed25519.PrivateKey:
		return *k
	case ed25519.PrivateKey:
		return k
	}
	t.Fatalf("lab key is %T", k)
	return nil
}

func connect(t *testing.T, alias string, o Options) (*Client, error) {
	t.Helper()
	tg, err := Resolve(alias, o)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", alias, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Dial(ctx, tg, o)
}

func mustConnect(t *testing.T, alias string, o Options) *Client {
	t.Helper()
	c, err := connect(t, alias, o)
	if err != nil {
		t.Fatalf("Dial(%s): %v", alias, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func run(t *testing.T, c *Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	defer s.Close()
	out, err := s.Output(cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return string(out)
}

func writeKnownHosts(t *testing.T, lines ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func randomKey(t *testing.T) (ed25519.PrivateKey, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, sp
}

func writeKey(t *testing.T, dir, name string, key any, passphrase string) string {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase != "" {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "test", []byte(passphrase))
	} else {
		block, err = ssh.MarshalPrivateKey(key, "test")
	}
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startAgent serves an in-process agent holding keys on a unix socket.
func startAgent(t *testing.T, keys ...any) string {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				agent.ServeAgent(kr, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return sock
}

func TestDialLab(t *testing.T) {
	home := testEnv(t)
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: 2})
	var warn syncBuffer
	base := Options{ConfigFile: lab.ConfigFile, HomeDir: home, Warn: &warn}
	h1 := lab.Server("h1")

	t.Run("echo", func(t *testing.T) {
		c := mustConnect(t, "h1", base)
		if out := run(t, c, "echo ok"); out != "ok\n" {
			t.Fatalf("echo ok printed %q", out)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})

	t.Run("HostKeyAlgorithms", func(t *testing.T) {
		// The lab's hosts have an ed25519 key: a list without it fails,
		// like ssh, naming the host key; one with it, in any place, works.
		o := base
		o.Options = []string{"HostKeyAlgorithms=ecdsa-sha2-nistp256,rsa-sha2-256"}
		if c, err := connect(t, "h1", o); err == nil {
			c.Close()
			t.Fatal("connected with no host key algorithm the host has")
		} else if !strings.Contains(err.Error(), "host key") {
			t.Errorf("err = %v, want one naming the host key", err)
		}
		o.Options = []string{"HostKeyAlgorithms=rsa-sha2-256,ssh-ed25519"}
		c := mustConnect(t, "h1", o)
		c.Close()
		o.Options = []string{"HostKeyAlgorithms=sk-ssh-ed25519@openssh.com"}
		if _, err := connect(t, "h1", o); err == nil || !strings.Contains(err.Error(), "none of HostKeyAlgorithms") {
			t.Errorf("a list of algorithms x/crypto lacks: %v", err)
		}
	})

	t.Run("default files", func(t *testing.T) {
		// No ConfigFile: ~/.ssh/config of HomeDir (the lab's copy) and
		// /etc/ssh/ssh_config, like ssh.
		c := mustConnect(t, "h1", Options{HomeDir: lab.HomeDir, Warn: &warn})
		if out := run(t, c, "echo ok"); out != "ok\n" {
			t.Fatalf("echo ok printed %q", out)
		}
	})

	t.Run("unknown host refused", func(t *testing.T) {
		o := base
		o.Options = []string{"UserKnownHostsFile=" + writeKnownHosts(t)}
		// "ask" without a terminal refuses like "yes".
		o2 := o
		o2.Options = append(o2.Options, "StrictHostKeyChecking=ask")
		if _, err := connect(t, "h1", o2); !errors.As(err, new(*HostKeyError)) {
			t.Fatalf("ask: got %v, want *HostKeyError", err)
		}
		_, err := connect(t, "h1", o)
		var hke *HostKeyError
		if !errors.As(err, &hke) {
			t.Fatalf("got %v, want *HostKeyError", err)
		}
		wantHost := "[" + h1.Host + "]:" + strconv.Itoa(h1.Port)
		if hke.Known || hke.Host != wantHost || hke.Fingerprint != ssh.FingerprintSHA256(h1.HostKey) {
			t.Fatalf("HostKeyError %+v; want unknown %s %s", hke, wantHost, ssh.FingerprintSHA256(h1.HostKey))
		}
		for _, s := range []string{"Host key verification failed", wantHost, "SHA256:"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	})

	t.Run("changed key refused", func(t *testing.T) {
		_, other := randomKey(t)
		for _, mode := range []string{"yes", "accept-new", "no"} {
			kh := writeKnownHosts(t, "# other key", knownhosts.Line([]string{h1.Addr()}, other))
			o := base
			o.Options = []string{"UserKnownHostsFile=" + kh, "StrictHostKeyChecking=" + mode}
			_, err := connect(t, "h1", o)
			var hke *HostKeyError
			if !errors.As(err, &hke) || !hke.Known || hke.File != kh || hke.Line != 2 {
				t.Fatalf("StrictHostKeyChecking=%s: got %v (%+v), want changed-key HostKeyError in %s:2", mode, err, hke, kh)
			}
			if !strings.Contains(err.Error(), "CHANGED") {
				t.Errorf("error %q does not say the key changed", err)
			}
		}
	})

	t.Run("revoked key refused", func(t *testing.T) {
		// Recorded for the host and revoked: refused, as by ssh.
		key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h1.HostKey)))
		kh := writeKnownHosts(t, knownhosts.Line([]string{h1.Addr()}, h1.HostKey), "@revoked * "+key)
		o := base
		o.Options = []string{"UserKnownHostsFile=" + kh}
		_, err := connect(t, "h1", o)
		var hke *HostKeyError
		var re *knownhosts.RevokedError
		if !errors.As(err, &hke) || !errors.As(err, &re) || hke.File != kh || hke.Line != 2 {
			t.Fatalf("got %v (%+v), want a HostKeyError for the revoked key at %s:2", err, hke, kh)
		}
		if !strings.Contains(err.Error(), "revoked") {
			t.Errorf("error %q does not say the key is revoked", err)
		}
	})

	t.Run("hashed known_hosts and HostKeyAlias", func(t *testing.T) {
		hashed := writeKnownHosts(t, knownhosts.HashHostname(knownhosts.Normalize(h1.Addr()))+" "+
			strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h1.HostKey))))
		o := base
		o.Options = []string{"UserKnownHostsFile=" + hashed}
		run(t, mustConnect(t, "h1", o), "true")

		// An alias is looked up bare, whatever the port, as OpenSSH does.
		aliased := writeKnownHosts(t, knownhosts.Line([]string{"myalias"}, h1.HostKey))
		o.Options = []string{"UserKnownHostsFile=" + aliased, "HostKeyAlias=myalias"}
		run(t, mustConnect(t, "h1", o), "true")
		if out, err := exec.Command("ssh", "-F", lab.ConfigFile, "-o", "UserKnownHostsFile="+aliased,
			"-o", "HostKeyAlias=myalias", "h1", "true").CombinedOutput(); err != nil {
			t.Fatalf("OpenSSH refuses the same aliased known_hosts: %v\n%s", err, out)
		}
		o.Options = []string{"UserKnownHostsFile=" + aliased}
		if _, err := connect(t, "h1", o); !errors.As(err, new(*HostKeyError)) {
			t.Fatalf("without HostKeyAlias: got %v, want *HostKeyError", err)
		}
	})

	t.Run("accept-new", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "new", "dir", "known_hosts")
		o := base
		o.Options = []string{"UserKnownHostsFile=" + kh, "StrictHostKeyChecking=accept-new"}
		run(t, mustConnect(t, "h1", o), "true")
		st, err := os.Stat(kh)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("known_hosts mode %v, want 0600", st.Mode().Perm())
		}
		if st, err := os.Stat(filepath.Dir(kh)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("known_hosts dir: %v %v, want mode 0700", st.Mode().Perm(), err)
		}
		b, _ := os.ReadFile(kh)
		if want := knownhosts.Line([]string{h1.Addr()}, h1.HostKey) + "\n"; string(b) != want {
			t.Errorf("known_hosts = %q, want %q", b, want)
		}
		// Now known: strict checking passes.
		o.Options = []string{"UserKnownHostsFile=" + kh, "StrictHostKeyChecking=yes"}
		run(t, mustConnect(t, "h1", o), "true")
	})

	t.Run("no warns every time", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		var w syncBuffer
		o := base
		o.Warn = &w
		o.Options = []string{"UserKnownHostsFile=" + kh, "StrictHostKeyChecking=no"}
		for i := 1; i <= 2; i++ {
			c := mustConnect(t, "h1", o)
			run(t, c, "true")
			c.Close()
			if n := strings.Count(w.String(), "not verified"); n != i {
				t.Fatalf("after %d connections, %d warnings:\n%s", i, n, w.String())
			}
		}
		if !strings.Contains(w.String(), ssh.FingerprintSHA256(h1.HostKey)) {
			t.Errorf("warning does not show the fingerprint: %s", w.String())
		}
		if _, err := os.Stat(kh); !os.IsNotExist(err) {
			t.Errorf("StrictHostKeyChecking=no wrote %s", kh)
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		priv, _ := randomKey(t)
		wrong := writeKey(t, t.TempDir(), "id_wrong", priv, "")
		cfg := labConfig(t, lab, "IdentityFile "+wrong)
		_, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home, Warn: &warn})
		var ae *AuthError
		if !errors.As(err, &ae) {
			t.Fatalf("got %v, want *AuthError", err)
		}
		if ae.User != h1.User || ae.Host != "h1" || len(ae.Tried) != 1 || !strings.HasPrefix(ae.Tried[0], wrong) {
			t.Errorf("AuthError %+v", ae)
		}
		if !strings.Contains(err.Error(), "Permission denied (publickey)") {
			t.Errorf("error %q", err)
		}
	})

	t.Run("missing -i file", func(t *testing.T) {
		o := base
		missing := filepath.Join(t.TempDir(), "nope")
		o.IdentityFiles = []string{missing}
		_, err := connect(t, "h1", o)
		var kfe *KeyFileError
		if !errors.As(err, &kfe) || kfe.File != missing || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("got %v, want KeyFileError for %s", err, missing)
		}
		// Missing files from the configuration are skipped silently.
		cfg := labConfig(t, lab, "IdentityFile "+missing, "IdentityFile "+lab.IdentityFile)
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
	})

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", net.JoinHostPort(h1.Host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		o := base
		o.Port = port
		_, err = connect(t, "h1", o)
		var de *DialError
		if !errors.As(err, &de) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("got %v, want DialError with ECONNREFUSED", err)
		}
		if de.Host != "h1" || de.Addr != net.JoinHostPort(h1.Host, strconv.Itoa(port)) {
			t.Errorf("DialError %+v", de)
		}
		// The same through a jump host.
		o.JumpHosts = "h1"
		_, err = connect(t, "h1", o)
		if !errors.As(err, &de) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("via h1: got %v, want DialError with ECONNREFUSED", err)
		}
	})

	t.Run("ProxyJump", func(t *testing.T) {
		o := base
		o.JumpHosts = "h1"
		c := mustConnect(t, "h2", o)
		if out := run(t, c, "echo ok"); out != "ok\n" {
			t.Fatalf("echo ok printed %q", out)
		}
		if len(c.jumps) != 1 || c.jumps[0].Target.Alias != "h1" {
			t.Fatalf("jumps: %v", c.jumps)
		}
		// h1's sshd opened the forwarded connection to h2.
		// Over a jump channel the connection has no local TCP address.
		if la, ok := c.LocalAddr().(*net.TCPAddr); !ok || la.Port != 0 {
			t.Errorf("LocalAddr %v: not a forwarded channel", c.LocalAddr())
		}
		c.Close()
		if _, _, err := c.jumps[0].SendRequest("x", true, nil); err == nil {
			t.Error("jump host still open after Close")
		}
	})

	t.Run("ProxyJump shared", func(t *testing.T) {
		if lab.Server("h3") == nil {
			if _, err := lab.AddServer(sshdtest.Options{Name: "h3"}); err != nil {
				t.Fatal(err)
			}
		}
		o := base
		o.JumpHosts = "h1"
		// Two connections at once through h1: one connection to h1.
		cs := make([]*Client, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, h := range []string{"h2", "h3"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cs[i], errs[i] = connect(t, h, o)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		if cs[0].jumps[0] != cs[1].jumps[0] {
			t.Fatalf("h2 and h3 went through two connections to h1 (%p, %p), want one", cs[0].jumps[0], cs[1].jumps[0])
		}
		for _, c := range cs {
			if out := run(t, c, "echo ok"); out != "ok\n" {
				t.Fatalf("echo ok printed %q", out)
			}
		}
		jump := cs[0].jumps[0]
		open := func() bool { _, _, err := jump.SendRequest("x", true, nil); return err == nil }
		// Closing one leaves the hop to the other.
		cs[0].Close()
		if !open() {
			t.Fatal("the hop closed while h3 still went through it")
		}
		if out := run(t, cs[1], "echo ok"); out != "ok\n" {
			t.Fatalf("h3 after h2 closed: echo ok printed %q", out)
		}
		cs[1].Close()
		if open() {
			t.Fatal("the hop is still open after every connection through it closed")
		}

		// A hop that breaks is not handed out again: the next connection
		// opens a new one.
		c := mustConnect(t, "h2", o)
		broken := c.jumps[0]
		if broken == jump {
			t.Fatal("a closed hop was handed out again")
		}
		broken.Client.Close()
		c2 := mustConnect(t, "h3", o)
		if c2.jumps[0] == broken {
			t.Fatal("a broken hop was handed out again")
		}
		if out := run(t, c2, "echo ok"); out != "ok\n" {
			t.Fatalf("through the new hop: echo ok printed %q", out)
		}
		c.Close()
		c2.Close()
	})

	t.Run("ProxyJump to a host reachable only through the jump", func(t *testing.T) {
		// inner's sshd admits only connections from 127.0.0.1, which is
		// where h1's sshd forwards from; the master itself connects from
		// 127.0.0.9 (BindAddress). So inner can be reached through h1 and
		// not directly — for OpenSSH's ssh and for us alike.
		if _, err := lab.AddServer(sshdtest.Options{Name: "inner", Host: "127.0.1.9",
			ExtraConfig: []string{"AllowUsers *@127.0.0.1"}}); err != nil {
			t.Fatal(err)
		}
		o := base
		o.Options = []string{"BindAddress=127.0.0.9"}
		if _, err := connect(t, "inner", o); !errors.As(err, new(*AuthError)) {
			t.Fatalf("direct connection from 127.0.0.9: got %v, want an *AuthError (sshd AllowUsers refuses it)", err)
		}
		if out, err := exec.Command("ssh", "-F", lab.ConfigFile, "-o", "BindAddress=127.0.0.9", "inner", "true").CombinedOutput(); err == nil {
			t.Fatalf("OpenSSH reached inner directly: the lab does not isolate it (%s)", out)
		}
		o.JumpHosts = "h1"
		c := mustConnect(t, "inner", o)
		if out := run(t, c, "echo ok"); out != "ok\n" {
			t.Fatalf("echo ok printed %q", out)
		}
		c.Close()
		if out, err := exec.Command("ssh", "-F", lab.ConfigFile, "-o", "BindAddress=127.0.0.9", "-J", "h1", "inner", "echo ok").CombinedOutput(); err != nil || string(out) != "ok\n" {
			t.Fatalf("OpenSSH through h1: %v %q", err, out)
		}
	})

	t.Run("ProxyJump two hops from config", func(t *testing.T) {
		cfg := labConfig(t, lab, "IdentityFile "+lab.IdentityFile)
		b, _ := os.ReadFile(cfg)
		b = append([]byte("Host viajump\n    ProxyJump h1,h2\n    HostName "+h1.Host+"\n"), b...)
		b = append(b, []byte(fmt.Sprintf("Host viajump\n    Port %d\n    User %s\n    UserKnownHostsFile %s\n    IdentityFile %s\n    BatchMode yes\n",
			h1.Port, h1.User, lab.KnownHostsFile, lab.IdentityFile))...)
		if err := os.WriteFile(cfg, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c := mustConnect(t, "viajump", Options{ConfigFile: cfg, HomeDir: home})
		run(t, c, "true")
		if len(c.jumps) != 2 || c.jumps[1].Target.Alias != "h2" {
			t.Fatalf("jumps: %+v", c.jumps)
		}
	})

	t.Run("ProxyCommand", func(t *testing.T) {
		if _, err := exec.LookPath("ssh"); err != nil {
			t.Skip("no ssh")
		}
		o := base
		o.Options = []string{"ProxyCommand=ssh -F " + lab.ConfigFile + " -W %h:%p h1"}
		c := mustConnect(t, "h2", o)
		if out := run(t, c, "echo ok"); out != "ok\n" {
			t.Fatalf("echo ok printed %q", out)
		}
	})

	t.Run("ProxyCommand that never answers", func(t *testing.T) {
		// The command reads the client's version and says nothing: the
		// context ends the handshake, and the command is killed.
		o := base
		o.Options = []string{"ProxyCommand=sleep 60"}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		tg, err := Resolve("h1", o)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Dial(ctx, tg, o)
		if err == nil {
			c.Close()
			t.Fatal("connected through a ProxyCommand that says nothing")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("Dial returned %v after its 1 s context", d)
		}
	})

	t.Run("encrypted key without agent or terminal", func(t *testing.T) {
		enc := writeKey(t, t.TempDir(), "id_enc", labKey(t, lab), "secret")
		cfg := labConfig(t, lab, "IdentityFile "+enc, "IdentitiesOnly yes")
		_, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home})
		var kfe *KeyFileError
		if !errors.As(err, &kfe) || kfe.File != enc || !errors.Is(err, ErrKeyEncrypted) {
			t.Fatalf("got %v, want KeyFileError for %s", err, enc)
		}
		if !strings.Contains(err.Error(), enc) || !strings.Contains(err.Error(), "encrypted") {
			t.Errorf("error %q", err)
		}
		// The same key in an agent: the agent signs for the file.
		sock := startAgent(t, labKey(t, lab))
		t.Setenv("SSH_AUTH_SOCK", sock)
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
	})

	t.Run("agent", func(t *testing.T) {
		sock := startAgent(t, labKey(t, lab))
		cfg := labConfig(t, lab, "IdentityAgent "+sock)
		c := mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home})
		if out := run(t, c, "echo ok"); out != "ok\n" {
			t.Fatalf("echo ok printed %q", out)
		}
		// IdentitiesOnly with an unrelated identity file hides the agent key.
		priv, _ := randomKey(t)
		other := writeKey(t, t.TempDir(), "id_other", priv, "")
		cfg = labConfig(t, lab, "IdentityAgent "+sock, "IdentitiesOnly yes", "IdentityFile "+other)
		if _, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}); !errors.As(err, new(*AuthError)) {
			t.Fatalf("IdentitiesOnly: got %v, want *AuthError", err)
		}
		// IdentitiesOnly with only the public key of the agent's key: as an
		// IdentityFile itself, or as the .pub of a missing private key.
		pubDir := t.TempDir()
		pubLine := ssh.MarshalAuthorizedKey(lab.Signer().PublicKey())
		os.WriteFile(filepath.Join(pubDir, "only.pub"), pubLine, 0o644)
		os.WriteFile(filepath.Join(pubDir, "gone.pub"), pubLine, 0o644)
		for _, f := range []string{"only.pub", "gone"} {
			cfg = labConfig(t, lab, "IdentityAgent "+sock, "IdentitiesOnly yes", "IdentityFile "+filepath.Join(pubDir, f))
			run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
		}
		// IdentityAgent none disables the agent.
		cfg = labConfig(t, lab, "IdentityAgent none")
		t.Setenv("SSH_AUTH_SOCK", sock)
		if _, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}); !errors.As(err, new(*AuthError)) {
			t.Fatalf("IdentityAgent none: got %v, want *AuthError", err)
		}
	})

	t.Run("rsa-sha2", func(t *testing.T) {
		// sshd 9.2 refuses ssh-rsa (SHA-1) signatures: a login with an RSA
		// key proves rsa-sha2-256/512 is used, from a file and from an agent.
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := ssh.NewPublicKey(&rk.PublicKey)
		auth := filepath.Join(h1.Dir, "authorized_keys")
		old, err := os.ReadFile(auth)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(auth, append(old, ssh.MarshalAuthorizedKey(pub)...), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(auth, old, 0o644) })
		file := writeKey(t, t.TempDir(), "id_rsa", rk, "")
		cfg := labConfig(t, lab, "IdentityFile "+file, "IdentitiesOnly yes")
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
		sock := startAgent(t, rk)
		cfg = labConfig(t, lab, "IdentityAgent "+sock)
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
		if !strings.Contains(h1.Log(), "Accepted publickey for "+h1.User+" from 127.0.0.1 port") || !strings.Contains(h1.Log(), "ssh2: RSA "+ssh.FingerprintSHA256(pub)) {
			t.Errorf("sshd did not log the RSA login:\n%s", h1.Log())
		}
		// PubkeyAcceptedAlgorithms decides the signature algorithm: ssh-rsa
		// alone (SHA-1) is what sshd 9.2 refuses; rsa-sha2-256 alone works.
		cfg = labConfig(t, lab, "IdentityFile "+file, "IdentitiesOnly yes", "PubkeyAcceptedAlgorithms ssh-rsa")
		if _, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}); !errors.As(err, new(*AuthError)) {
			t.Errorf("PubkeyAcceptedAlgorithms ssh-rsa: got %v, want an *AuthError (sshd refuses SHA-1)", err)
		}
		cfg = labConfig(t, lab, "IdentityFile "+file, "IdentitiesOnly yes", "PubkeyAcceptedAlgorithms rsa-sha2-256")
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
		// Control: a plain ssh.Signer (ssh-rsa, SHA-1 signatures) is refused,
		// so the logins above used rsa-sha2-256/512.
		fs, _ := ssh.NewSignerFromKey(rk)
		_, err = ssh.Dial("tcp", h1.Addr(), &ssh.ClientConfig{
			User: h1.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sha1Only{fs})},
			HostKeyCallback: ssh.FixedHostKey(h1.HostKey), Timeout: 10 * time.Second,
		})
		if err == nil {
			t.Error("sshd accepted an ssh-rsa (SHA-1) signature; the check proves nothing")
		}
	})

	t.Run("PubkeyAcceptedAlgorithms", func(t *testing.T) {
		// The lab's key is ed25519: left out, it is not offered, and the
		// error says so, as ssh's debug output does.
		cfg := labConfig(t, lab, "IdentityFile "+lab.IdentityFile, "IdentitiesOnly yes", "PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256")
		_, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home})
		var ae *AuthError
		if !errors.As(err, &ae) || len(ae.Tried) != 0 || len(ae.Skipped) != 1 || !strings.Contains(err.Error(), "not in PubkeyAcceptedAlgorithms: "+lab.IdentityFile+" ED25519") {
			t.Errorf("ed25519 key left out: %v, want an *AuthError naming it as skipped", err)
		}
		cfg = labConfig(t, lab, "IdentityFile "+lab.IdentityFile, "IdentitiesOnly yes", "PubkeyAcceptedKeyTypes ssh-ed25519")
		run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
	})

	t.Run("keepalive with real sshd", func(t *testing.T) {
		tg, err := Resolve("h1", base)
		if err != nil {
			t.Fatal(err)
		}
		tg.ServerAliveInterval, tg.ServerAliveCountMax = 100*time.Millisecond, 1
		c, err := Dial(context.Background(), tg, base)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond) // sshd answers: still open
		run(t, c, "true")
		c.Close()
	})
}

// sha1Only hides the AlgorithmSigner methods of a signer.
type sha1Only struct{ s ssh.Signer }

func (w sha1Only) PublicKey() ssh.PublicKey { return w.s.PublicKey() }
func (w sha1Only) Sign(r io.Reader, d []byte) (*ssh.Signature, error) {
	return w.s.Sign(r, d)
}

func TestDialTimeout(t *testing.T) {
	home := testEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // accept, never speak
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := filepath.Join(home, "config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("Host silent\n  HostName 127.0.0.1\n  Port %d\n  BatchMode yes\n", port)), 0o600)
	o := Options{ConfigFile: cfg, HomeDir: home}

	tg, err := Resolve("silent", o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, tg, o)
	el := time.Since(start)
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DialError with DeadlineExceeded", err)
	}
	if el > 2*time.Second {
		t.Fatalf("Dial took %v with a 300ms deadline", el)
	}

	// ConnectTimeout does the same without a context deadline.
	o.Options = []string{"ConnectTimeout=1"}
	tg, err = Resolve("silent", o)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = Dial(context.Background(), tg, o)
	if el := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || el < 900*time.Millisecond || el > 3*time.Second {
		t.Fatalf("ConnectTimeout=1: %v after %v", err, el)
	}
}

// TestKeepaliveClosesDeadServer uses an in-process server that never
// answers keepalive requests: the client must close itself after
// ServerAliveCountMax missed replies.
func TestKeepaliveClosesDeadServer(t *testing.T) {
	home := testEnv(t)
	hostPriv, hostPub := randomKey(t)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	scfg := &ssh.ServerConfig{NoClientAuth: true}
	scfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc, chans, reqs, err := ssh.NewServerConn(c, scfg)
		if err != nil {
			return
		}
		defer sc.Close()
		go func() {
			for ch := range chans {
				ch.Reject(ssh.Prohibited, "no")
			}
		}()
		for range reqs {
			// never reply
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	addr := ln.Addr().(*net.TCPAddr)
	kh := writeKnownHosts(t, knownhosts.Line([]string{addr.String()}, hostPub))
	var warn syncBuffer
	tg := &Target{
		Alias: "dead", HostName: "127.0.0.1", Port: addr.Port, User: "u",
		UserKnownHostsFiles: []string{kh}, StrictHostKeyChecking: "yes",
		ServerAliveInterval: 50 * time.Millisecond, ServerAliveCountMax: 2,
	}
	c, err := Dial(context.Background(), tg, Options{HomeDir: home, Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { c.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("client not closed after missed keepalives")
	}
	if !strings.Contains(warn.String(), "Timeout, server dead not responding") {
		t.Errorf("warning: %q", warn.String())
	}
	c.Close()
}

// TestCertificate logs in with a key that is not in authorized_keys but
// has a certificate signed by a CA the server trusts.
func TestCertificate(t *testing.T) {
	home := testEnv(t)
	caPriv, caPub := randomKey(t)
	caFile := filepath.Join(t.TempDir(), "ca.pub")
	if err := os.WriteFile(caFile, ssh.MarshalAuthorizedKey(caPub), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(caFile), 0o755)
	lab := sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: 1, ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
	h1 := lab.Server("h1")

	userPriv, userPub := randomKey(t)
	caSigner, _ := ssh.NewSignerFromKey(caPriv)
	cert := &ssh.Certificate{
		Key: userPub, CertType: ssh.UserCert, KeyId: "test",
		ValidPrincipals: []string{h1.User}, ValidBefore: ssh.CertTimeInfinity,
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := writeKey(t, dir, "id_cert", userPriv, "")
	// Without the certificate: refused.
	cfg := labConfig(t, lab, "IdentityFile "+key)
	if _, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}); !errors.As(err, new(*AuthError)) {
		t.Fatalf("without certificate: %v, want *AuthError", err)
	}
	// <key>-cert.pub beside the key.
	if err := os.WriteFile(key+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
	// CertificateFile elsewhere.
	os.Rename(key+"-cert.pub", filepath.Join(dir, "elsewhere.pub"))
	cfg = labConfig(t, lab, "IdentityFile "+key, "CertificateFile "+filepath.Join(dir, "elsewhere.pub"))
	run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
	// PubkeyAcceptedAlgorithms names certificates by their own algorithms.
	cfg = labConfig(t, lab, "IdentityFile "+key, "CertificateFile "+filepath.Join(dir, "elsewhere.pub"), "PubkeyAcceptedAlgorithms ssh-ed25519")
	if _, err := connect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}); !errors.As(err, new(*AuthError)) {
		t.Errorf("certificate algorithm not accepted: %v, want *AuthError", err)
	}
	cfg = labConfig(t, lab, "IdentityFile "+key, "CertificateFile "+filepath.Join(dir, "elsewhere.pub"), "PubkeyAcceptedAlgorithms ssh-ed25519-cert-v01@openssh.com")
	run(t, mustConnect(t, "h1", Options{ConfigFile: cfg, HomeDir: home}), "true")
}

// TestDialTCPLikeSSH: ConnectionAttempts tries a refused connection again a
// second later, up to that many times, and stops at the context's end;
// AddressFamily picks the addresses.
func TestDialTCPLikeSSH(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // refused until listening again
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := dialTCP(ctx, &Target{ConnectionAttempts: 1}, addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("one attempt: %v, want refused", err)
	}
	// The port opens between the first and the second attempt.
	opened := make(chan net.Listener, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
		}
		opened <- l
	}()
	start := time.Now()
	conn, err := dialTCP(ctx, &Target{ConnectionAttempts: 3}, addr)
	if l := <-opened; l != nil {
		defer l.Close()
	}
	if err != nil {
		t.Fatalf("three attempts, the port open after the first: %v", err)
	}
	conn.Close()
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("connected after %v: the second attempt did not wait a second", d)
	}

	// A context that ends during the pause ends the attempts.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	start = time.Now()
	if _, err := dialTCP(short, &Target{ConnectionAttempts: 10}, "127.0.0.1:1"); err == nil {
		t.Fatal("connected to port 1")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("attempts went on %v after the context ended", d)
	}

	for _, tt := range []struct {
		family string
		ok     bool
	}{{"any", true}, {"inet", true}, {"inet6", false}} {
		conn, err := dialTCP(ctx, &Target{ConnectionAttempts: 1, AddressFamily: tt.family}, addr)
		if (err == nil) != tt.ok {
			t.Errorf("AddressFamily %s to %s: %v", tt.family, addr, err)
		}
		if conn != nil {
			conn.Close()
		}
	}
}
