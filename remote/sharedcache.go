package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// Hosts that share a home directory (over NFS, as cluster nodes often do)
// share the agent cache in it. The bootstrap names the cache it is about to
// upload into by a token kept there (.id, written by the first host that
// needs it); while one connection of this process uploads an agent into a
// cache, the others that ask for the same agent for the same cache wait for
// that upload to end and have their host look again, instead of each
// sending the same megabytes into the same directory.
var sharedUploads struct {
	mu sync.Mutex
	m  map[sharedUpload]chan struct{} // closed when that upload has ended
}

// sharedUpload is one agent going into one cache.
type sharedUpload struct{ cache, hash string }

// claimUpload returns, for the agent hash going into cache, either a channel
// that closes when another connection's upload into that cache ends (the
// caller waits, then has its host look again), or nil and a release that
// the caller, which is to upload, calls when its upload has ended, however.
func claimUpload(cache, hash string) (wait <-chan struct{}, release func()) {
	k := sharedUpload{cache, hash}
	sharedUploads.mu.Lock()
	defer sharedUploads.mu.Unlock()
	if ch, ok := sharedUploads.m[k]; ok {
		return ch, nil
	}
	if sharedUploads.m == nil {
		sharedUploads.m = make(map[sharedUpload]chan struct{})
	}
	ch := make(chan struct{})
	sharedUploads.m[k] = ch
	return nil, func() {
		sharedUploads.mu.Lock()
		delete(sharedUploads.m, k)
		sharedUploads.mu.Unlock()
		close(ch)
	}
}

// parseNeed splits what follows "toworker-need " into the host's platform,
// the two words `uname -sm` prints, and the token of its agent cache when
// the line carries a well-formed one (newCacheToken's 24 hexadecimal
// digits) after them. A line of fewer words is all platform.
func parseNeed(s string) (uname, cache string) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return s, ""
	}
	if len(f) == 3 && cacheToken(f[2]) {
		cache = f[2]
	}
	return f[0] + " " + f[1], cache
}

// newCacheToken is a fresh token for a cache's .id.
func newCacheToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func cacheToken(s string) bool {
	if len(s) != 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// waitShared waits for another connection's upload into the same cache to
// end, and reports whether it did. It gives up, so that the caller uploads
// itself, once half the time ctx has left is gone (an upload that slow must
// not leave the waiters too little time for their own), or when ctx ends.
func waitShared(ctx context.Context, wait <-chan struct{}) bool {
	var giveUp <-chan time.Time
	if dl, ok := ctx.Deadline(); ok {
		t := time.NewTimer(time.Until(dl) / 2)
		defer t.Stop()
		giveUp = t.C
	}
	select {
	case <-wait:
		return true
	case <-giveUp:
		return false
	case <-ctx.Done():
		return false
	}
}
