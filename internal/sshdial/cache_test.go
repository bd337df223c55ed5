package sshdial

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// checkHost runs cb for host with key: nil when the key is the one known.
func checkHost(cb ssh.HostKeyCallback, host string, key ssh.PublicKey) error {
	return cb(host, lookupAddr(host), key)
}

func TestKnownHostsCache(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a known_hosts line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, k1 := randomKey(t)
	_, k2 := randomKey(t)
	good := writeKnownHosts(t, knownhosts.Line([]string{"a.example:22"}, k1))
	files := []string{bad, good, filepath.Join(dir, "missing")}
	var warn syncBuffer
	warnings := func() int { return strings.Count(warn.String(), "ignoring known hosts file "+bad) }

	// A fan-out: every connection at once, one parse (one warning).
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kh, err := knownHosts(files, &warn)
			if err == nil {
				err = checkHost(kh.cb, "a.example:22", k1)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("known host refused: %v", err)
	}
	if n := warnings(); n != 1 {
		t.Fatalf("32 connections at once parsed the files %d times (warnings), want once:\n%s", n, warn.String())
	}

	// Unchanged: not parsed again.
	if _, err := knownHosts(files, &warn); err != nil || warnings() != 1 {
		t.Fatalf("unchanged files: err %v, %d warnings; want them not parsed again", err, warnings())
	}

	// The key replaced by another of the same size, and the file's times
	// put back: the contents differ, so the old key is refused.
	st, err := os.Stat(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte(knownhosts.Line([]string{"a.example:22"}, k2)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(good, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(good); st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("the rewrite changed size or mtime (%d %v → %d %v): the test needs them equal", st.Size(), st.ModTime(), st2.Size(), st2.ModTime())
	}
	kh, err := knownHosts(files, &warn)
	if err != nil {
		t.Fatal(err)
	}
	cb := kh.cb
	var ke *knownhosts.KeyError
	if err := checkHost(cb, "a.example:22", k1); !errors.As(err, &ke) || len(ke.Want) != 1 {
		t.Fatalf("the replaced key: %v, want a KeyError naming the new key", err)
	}
	if err := checkHost(cb, "a.example:22", k2); err != nil {
		t.Fatalf("the new key: %v", err)
	}
	if n := warnings(); n != 2 {
		t.Errorf("after the change, %d warnings; want the files parsed once more", n)
	}

	// A file that appears is read.
	if err := os.WriteFile(files[2], []byte(knownhosts.Line([]string{"b.example:22"}, k1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kh, err = knownHosts(files, &warn); err != nil {
		t.Fatal(err)
	}
	if err := checkHost(kh.cb, "b.example:22", k1); err != nil {
		t.Fatalf("a host of a file created since: %v", err)
	}
	// And one that goes away no longer counts.
	os.Remove(files[2])
	if kh, err = knownHosts(files, &warn); err != nil {
		t.Fatal(err)
	}
	if err := checkHost(kh.cb, "b.example:22", k1); !errors.As(err, &ke) || len(ke.Want) != 0 {
		t.Fatalf("a host of a removed file: %v, want unknown", err)
	}
}

func TestPrivateKeyCache(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	read := func(f string) []byte {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rsaData := read(writeKey(t, dir, "id_rsa", rk, ""))
	priv, _ := randomKey(t)
	edData := read(writeKey(t, dir, "id_ed25519", priv, ""))
	encData := read(writeKey(t, dir, "id_enc", priv, "secret"))

	// Connections at once share one parse.
	signers := make([]ssh.Signer, 16)
	var wg sync.WaitGroup
	for i := range signers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := parsePrivateKey(rsaData)
			if err != nil {
				t.Error(err)
			}
			signers[i] = s
		}()
	}
	wg.Wait()
	for i, s := range signers {
		if s == nil || s != signers[0] {
			t.Fatalf("signer %d is %p, want the one parse %p shared", i, s, signers[0])
		}
	}
	// The shared signer still signs, concurrently.
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(fmt.Sprint("session ", i))
			sig, err := signers[0].Sign(rand.Reader, data)
			if err == nil {
				err = signers[0].PublicKey().Verify(data, sig)
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	// Other contents, another key; an encrypted key stays encrypted.
	ed, err := parsePrivateKey(edData)
	if err != nil || ed == signers[0] || ed.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("ed25519 file: %v, %v", ed, err)
	}
	for range 2 {
		var pm *ssh.PassphraseMissingError
		if _, err := parsePrivateKey(encData); !errors.As(err, &pm) || pm.PublicKey == nil {
			t.Fatalf("encrypted key: %v, want *ssh.PassphraseMissingError with its public key", err)
		}
	}
	if _, err := parsePrivateKey([]byte("garbage")); err == nil {
		t.Fatal("garbage parsed as a key")
	}
}

// BenchmarkHostKeysAndIdentity is what each connection spends on its
// known_hosts and identity files before dialling, with a 2,000-line hashed
// known_hosts and a 4,096-bit RSA identity: "cached" as dialling does it
// now (read, compare, hash), "parsed" as it did before, parsing both each
// time (go test -run X -bench HostKeysAndIdentity ./internal/sshdial/).
func BenchmarkHostKeysAndIdentity(b *testing.B) {
	dir := b.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(rk)
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	for i := range 2000 {
		sb.WriteString(knownhosts.Line([]string{knownhosts.HashHostname(net.JoinHostPort(fmt.Sprintf("host%d.example", i), "22"))}, signer.PublicKey()) + "\n")
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(rk, "")
	if err != nil {
		b.Fatal(err)
	}
	idf := filepath.Join(dir, "id_rsa")
	if err := os.WriteFile(idf, pem.EncodeToMemory(block), 0o600); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := knownHosts([]string{kh}, io.Discard); err != nil {
				b.Fatal(err)
			}
			data, err := os.ReadFile(idf)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := parsePrivateKey(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parsed", func(b *testing.B) {
		for b.Loop() {
			for range 2 { // each file alone, then all together
				if _, err := knownhosts.New(kh); err != nil {
					b.Fatal(err)
				}
			}
			data, err := os.ReadFile(idf)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ssh.ParsePrivateKey(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRecordedKeyShortcut checks that skipping the callback's second
// lookup for a recorded key (hostKeyChecker.recorded) never changes what
// is accepted: for each known_hosts, the checker's verdict on the key the
// server shows is the callback's own.
func TestRecordedKeyShortcut(t *testing.T) {
	_, k1 := randomKey(t)
	_, k2 := randomKey(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ssh.NewSignerFromKey(rk)
	if err != nil {
		t.Fatal(err)
	}
	k3 := rs.PublicKey()
	line := func(host string, k ssh.PublicKey) string { return knownhosts.Line([]string{host}, k) }
	key := func(k ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) }
	for _, tt := range []struct {
		name     string
		lines    []string
		shown    ssh.PublicKey
		accept   bool
		shortcut bool // recorded() answers, without the second lookup
	}{
		{"recorded", []string{line("a.example", k1)}, k1, true, true},
		{"changed", []string{line("a.example", k1)}, k2, false, false},
		{"other type recorded", []string{line("a.example", k3)}, k1, false, false},
		{"second of two lines", []string{line("a.example", k2), line("a.example", k1)}, k1, true, true},
		{"two types", []string{line("a.example", k3), line("a.example", k1)}, k3, true, true},
		{"other host's key", []string{line("b.example", k1)}, k1, false, false},
		{"hashed", []string{knownhosts.HashHostname("a.example") + " " + key(k1)}, k1, true, true},
		{"pattern", []string{"*.example " + key(k1)}, k1, true, true},
		{"negated pattern", []string{"!a.example,*.example " + key(k1)}, k1, false, false},
		{"revoked and recorded", []string{line("a.example", k1), "@revoked * " + key(k1)}, k1, false, false},
		{"other key revoked", []string{line("a.example", k1), "@revoked * " + key(k2)}, k1, true, false},
		{"revoked in a comment only", []string{"# @revoked ones go below", line("a.example", k1)}, k1, true, false},
		{"CA beside the key", []string{"@cert-authority *.example " + key(k2), line("a.example", k1)}, k1, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := writeKnownHosts(t, tt.lines...)
			tg := &Target{Alias: "a", HostName: "a.example", Port: 22, UserKnownHostsFiles: []string{f}, StrictHostKeyChecking: "yes"}
			hk, err := newHostKeyChecker(tg, &Options{Warn: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			hk.algorithms()
			cb, err := knownhosts.New(f)
			if err != nil {
				t.Fatal(err)
			}
			want := cb(hk.lookup, lookupAddr(hk.lookup), tt.shown)
			got := hk.verify(tt.shown)
			if (got == nil) != (want == nil) || (got == nil) != tt.accept {
				t.Fatalf("checker: %v; callback: %v; want accepted %v", got, want, tt.accept)
			}
			if r := hk.recorded(tt.shown); r != tt.shortcut {
				t.Errorf("recorded() = %v, want %v", r, tt.shortcut)
			}
			var re *knownhosts.RevokedError
			if errors.As(want, &re) && !errors.As(got, &re) {
				t.Errorf("checker: %v, want the callback's RevokedError", got)
			}
		})
	}
}

func TestKnownHostsDirectoryLeftOut(t *testing.T) {
	// A directory named as a known_hosts file is left out silently, as by
	// ssh, cached or not.
	f := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.Mkdir(f, 0o700); err != nil {
		t.Fatal(err)
	}
	var warn syncBuffer
	for range 2 {
		if kh, err := knownHosts([]string{f}, &warn); err != nil || kh.cb != nil || warn.String() != "" {
			t.Fatalf("a directory as known_hosts: %+v, %v, %q", kh, err, warn.String())
		}
	}
}
