package sshdial

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHostsCache keeps the host key callback parsed from each set of
// known_hosts files, with the contents it was parsed from. knownhosts
// parses every line's key when it reads a file (about 3 ms for a
// 2,000-line file), so a fan-out that read the files for each connection
// spent that much CPU per host; now each connection compares the files'
// bytes with the cached ones, and they are parsed again only when they
// changed. Comparing contents, not modification times,
// means a stale callback is never used, however the file was rewritten.
var knownHostsCache struct {
	mu sync.Mutex
	m  map[string]*knownHostsEntry // by the candidate files' paths
}

// knownHostsEntry is one parse: the contents of each candidate file (nil
// for one that does not exist or is a directory), the callback of those
// that parsed (nil when there were none), and whether any file has an
// @revoked line.
type knownHostsEntry struct {
	data    [][]byte
	cb      ssh.HostKeyCallback
	revokes bool
}

// maxKnownHostsSets bounds knownHostsCache; a process rarely uses more
// than a few sets of files.
const maxKnownHostsSets = 16

// readKnownHostsFiles returns the contents of each of files, nil for one
// that does not exist, cannot be read or is a directory.
func readKnownHostsFiles(files []string) [][]byte {
	out := make([][]byte, len(files))
	for i, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue
		}
		if b, err := os.ReadFile(f); err == nil {
			if b == nil {
				b = []byte{}
			}
			out[i] = b
		}
	}
	return out
}

func sameContents(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) || !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// unchanged reports whether files still hold data (as readKnownHostsFiles
// would read them), reading each in pieces rather than whole: a large
// known_hosts is compared without allocating a copy of it per connection.
func unchanged(files []string, data [][]byte) bool {
	bp := compareBufs.Get().(*[]byte)
	defer compareBufs.Put(bp)
	buf := *bp
	for i, f := range files {
		st, err := os.Stat(f)
		if err != nil || st.IsDir() {
			if data[i] != nil {
				return false
			}
			continue
		}
		if data[i] == nil || st.Size() != int64(len(data[i])) || !sameFile(f, data[i], buf) {
			return false
		}
	}
	return true
}

// compareBufs holds the buffers unchanged reads files into.
var compareBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// sameFile reports whether the file f holds exactly want.
func sameFile(f string, want, buf []byte) bool {
	r, err := os.Open(f)
	if err != nil {
		return false
	}
	defer r.Close()
	for {
		n, err := io.ReadFull(r, buf)
		if n > len(want) || !bytes.Equal(buf[:n], want[:n]) {
			return false
		}
		want = want[n:]
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return len(want) == 0
		case err != nil:
			return false
		}
	}
}

// knownHosts returns the entry for the known_hosts files among files that
// exist; its callback is nil if none does or parses. Like
// ssh, a file without any valid line is left out with a warning to warn;
// the warning comes again only when the files change.
func knownHosts(files []string, warn io.Writer) (*knownHostsEntry, error) {
	key := strings.Join(files, "\x00")
	knownHostsCache.mu.Lock()
	e := knownHostsCache.m[key]
	knownHostsCache.mu.Unlock()
	if e != nil && unchanged(files, e.data) {
		return e, nil
	}

	// Parse under the lock that appends take, so that a line being added
	// by another connection (accept-new) is not read half-written, and so
	// that the connections of a fan-out, which all start at once, wait for
	// one parse instead of each making its own.
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	data := readKnownHostsFiles(files)
	knownHostsCache.mu.Lock()
	e = knownHostsCache.m[key]
	knownHostsCache.mu.Unlock()
	if e != nil && sameContents(e.data, data) {
		return e, nil
	}
	var good []string
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue
		}
		// An unreadable file fails here, as it did before there was a
		// cache, and is read (and warned about) again at each connection.
		if _, err := knownhosts.New(f); err != nil {
			fmt.Fprintf(warn, "Warning: ignoring known hosts file %s: %v\n", f, err)
			continue
		}
		good = append(good, f)
	}
	e = &knownHostsEntry{data: data}
	for _, b := range data {
		// knownhosts reads a marker only as this exact word; any
		// occurrence, even in a comment, counts.
		e.revokes = e.revokes || bytes.Contains(b, []byte("@revoked"))
	}
	if len(good) > 0 {
		cb, err := knownhosts.New(good...)
		if err != nil {
			return nil, fmt.Errorf("sshdial: reading known hosts: %w", err)
		}
		e.cb = cb
	}
	if !sameContents(data, readKnownHostsFiles(files)) {
		// Changed while being parsed: use it for this connection only.
		return e, nil
	}
	knownHostsCache.mu.Lock()
	if knownHostsCache.m == nil || len(knownHostsCache.m) >= maxKnownHostsSets {
		knownHostsCache.m = make(map[string]*knownHostsEntry)
	}
	knownHostsCache.m[key] = e
	knownHostsCache.mu.Unlock()
	return e, nil
}

// probeKey is a public key that no known_hosts file holds, looked up to
// learn which keys are recorded for a host (hostKeyChecker.algorithms).
// One per process: generating it took more time than the lookup.
var probeKey = sync.OnceValue(func() ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	return k
})
