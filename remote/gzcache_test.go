package remote

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A master process compresses an agent once for every later process: the
// next loads the cached upload, one whose bytes do not match its name is
// removed and replaced, and old entries are pruned.
func TestAgentGzipCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, err := gzipCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "agent")
	raw := make([]byte, 256<<10)
	rand.Read(raw)
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	load := func() *agentBinary {
		t.Helper()
		b := &agentBinary{path: bin}
		if err := b.load(); err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(b.gz))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(zr)
		if !bytes.Equal(got, raw) {
			t.Fatal("the upload does not decompress to the agent")
		}
		return b
	}
	entries := func() []string {
		t.Helper()
		names, _ := filepath.Glob(filepath.Join(dir, "*.gz"))
		for i, n := range names {
			names[i] = filepath.Base(n)
		}
		return names
	}
	b := load()
	cached := filepath.Join(dir, gzipCacheName(b.hash, b.gz))
	if fi, err := os.Stat(cached); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("no cached upload with mode 0600: %v %v (cache holds %q)", fi, err, entries())
	}
	// A second process uses the cached file as it is: here one compressed
	// differently, so that it can be told from a fresh compression.
	var best bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&best, gzip.BestCompression)
	zw.Write(raw)
	zw.Close()
	os.Remove(cached)
	if err := os.WriteFile(filepath.Join(dir, gzipCacheName(b.hash, best.Bytes())), best.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if b2 := load(); !bytes.Equal(b2.gz, best.Bytes()) {
		t.Fatal("the second load did not use the cached upload")
	}
	// Bytes changed under a name (a partial write, a bad disk) are not
	// used: the entry is removed and a fresh compression stored.
	for _, n := range entries() {
		os.WriteFile(filepath.Join(dir, n), []byte("not the agent"), 0o600)
	}
	if b3 := load(); !bytes.Equal(b3.gz, b.gz) {
		t.Fatal("a cached upload whose bytes do not match its name was used")
	}
	if got := entries(); len(got) != 1 || got[0] != filepath.Base(cached) {
		t.Fatalf("cache holds %q after a bad entry, want only %q", got, filepath.Base(cached))
	}
	// Pruning keeps the newest gzipCacheKeep entries.
	for i := range 6 {
		writeCachedGzip(string(rune('a'+i))+"x", []byte{1, byte(i)})
	}
	if got := entries(); len(got) != gzipCacheKeep {
		t.Fatalf("%d cache entries (%q), want %d", len(got), got, gzipCacheKeep)
	}
}

// A master process hashes an agent once for every later process, while the
// file is the one it hashed: a rebuilt or rewritten binary is hashed again.
func TestAgentHashCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, err := gzipCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "agent")
	raw := make([]byte, 64<<10)
	rand.Read(raw)
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	hashOf := func() string {
		t.Helper()
		b := &agentBinary{path: bin} // a new process's
		if err := b.loadHash(); err != nil {
			t.Fatal(err)
		}
		return b.hash
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	if h := hashOf(); h != sum(raw) {
		t.Fatalf("hash %s, want %s", h, sum(raw))
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "sha256-*"))
	if len(entries) != 1 {
		t.Fatalf("cache holds %q, want one hash entry", entries)
	}
	if fi, err := os.Stat(entries[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("hash entry: %v %v, want mode 0600", fi, err)
	}
	// The next process takes the hash from the entry: one made to say
	// something else shows it.
	planted := sum([]byte("planted"))
	if err := os.WriteFile(entries[0], []byte(planted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if h := hashOf(); h != planted {
		t.Fatalf("second process hashed again (%s), want the cached hash", h)
	}
	// Compressing it for an upload reads the bytes, and refuses a hash
	// that is not theirs.
	b := &agentBinary{path: bin}
	if err := b.load(); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("load with a wrong cached hash: %v, want a refusal", err)
	}
	// The same bytes written again (a new modification and change time),
	// or another file renamed over it: hashed again.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	if h := hashOf(); h != sum(raw) {
		t.Fatalf("after a rewrite: %s, want %s", h, sum(raw))
	}
	other := append([]byte(nil), raw...)
	other[0] ^= 1
	tmp := bin + ".new"
	if err := os.WriteFile(tmp, other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	if h := hashOf(); h != sum(other) {
		t.Fatalf("after a rename over it: %s, want %s", h, sum(other))
	}
	// Old entries are pruned.
	for i := range hashCacheKeep + 5 {
		writeCachedHash(fmt.Sprint("id ", i), sum(raw))
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "sha256-*")); len(entries) != hashCacheKeep {
		t.Errorf("%d hash entries kept, want %d", len(entries), hashCacheKeep)
	}
	if gz, _ := filepath.Glob(filepath.Join(dir, "*.gz")); len(gz) != 0 {
		t.Errorf("hashing left gzip entries %q", gz)
	}
}
