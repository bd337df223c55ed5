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
// next loads the cached upload, one that does not decompress to the
// agent's hash is ignored and replaced, and old entries are pruned.
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
	b := load()
	cached := filepath.Join(dir, b.hash+".gz")
	if fi, err := os.Stat(cached); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("no cached upload with mode 0600: %v %v", fi, err)
	}
	// A second process uses the cached file as it is: here one compressed
	// differently, so that it can be told from a fresh compression.
	var best bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&best, gzip.BestCompression)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(cached, best.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if b2 := load(); !bytes.Equal(b2.gz, best.Bytes()) {
		t.Fatal("the second load did not use the cached upload")
	}
	// A cached file of other bytes under this hash is ignored and replaced.
	var other bytes.Buffer
	zw = gzip.NewWriter(&other)
	zw.Write([]byte("not the agent"))
	zw.Close()
	os.WriteFile(cached, other.Bytes(), 0o600)
	if b3 := load(); !bytes.Equal(b3.gz, b.gz) {
		t.Fatal("a cached upload of other bytes was used")
	}
	if got, _ := os.ReadFile(cached); !bytes.Equal(got, b.gz) {
		t.Fatal("the bad cached upload was not replaced")
	}
	// Pruning keeps the newest gzipCacheKeep entries.
	for i := range 6 {
		writeCachedGzip(string(rune('a'+i))+"x", []byte{1})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != gzipCacheKeep {
		t.Fatalf("%d cache entries, want %d", len(entries), gzipCacheKeep)
	}
}
