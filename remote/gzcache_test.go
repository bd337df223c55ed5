package remote

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
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
