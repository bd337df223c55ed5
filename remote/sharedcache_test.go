package remote

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseNeed(t *testing.T) {
	const tok = "0123456789abcdef01234567"
	tests := []struct{ line, uname, cache string }{
		{"Linux x86_64 " + tok, "Linux x86_64", tok},
		{"Linux x86_64", "Linux x86_64", ""},
		{"Linux x86_64 ", "Linux x86_64", ""}, // no token: .id unreadable
		{"Plan9 mips " + tok, "Plan9 mips", tok},
		{"Linux x86_64 0123456789ABCDEF01234567", "Linux x86_64", ""}, // not a token
		{"Linux x86_64 " + tok + "0", "Linux x86_64", ""},
		{"Linux x86_64 " + tok + " x", "Linux x86_64", ""},
		{"Linux x86_64 ../../etc", "Linux x86_64", ""},
		{"Linux", "Linux", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		uname, cache := parseNeed(tt.line)
		if uname != tt.uname || cache != tt.cache {
			t.Errorf("parseNeed(%q) = %q, %q; want %q, %q", tt.line, uname, cache, tt.uname, tt.cache)
		}
	}
}

func FuzzParseNeed(f *testing.F) {
	f.Add("Linux x86_64 0123456789abcdef01234567")
	f.Add("Darwin arm64")
	f.Add("a b c")
	f.Fuzz(func(t *testing.T, line string) {
		uname, cache := parseNeed(line)
		if cache != "" && !cacheToken(cache) {
			t.Fatalf("parseNeed(%q) = %q, %q: not a token", line, uname, cache)
		}
		if f := strings.Fields(line); len(f) >= 2 && uname != f[0]+" "+f[1] {
			t.Fatalf("parseNeed(%q) = %q, %q: not the first two words", line, uname, cache)
		}
	})
}

func TestClaimUpload(t *testing.T) {
	wait, release := claimUpload("c1", "h")
	if wait != nil || release == nil {
		t.Fatal("the first claim must upload")
	}
	w2, r2 := claimUpload("c1", "h")
	if w2 == nil || r2 != nil {
		t.Fatal("a second claim on the same cache and agent must wait")
	}
	if w, r := claimUpload("c2", "h"); w != nil || r == nil {
		t.Fatal("another cache must not wait")
	} else {
		r()
	}
	if w, r := claimUpload("c1", "other"); w != nil || r == nil {
		t.Fatal("another agent must not wait")
	} else {
		r()
	}
	select {
	case <-w2:
		t.Fatal("the wait ended before the upload")
	default:
	}
	release()
	<-w2
	if w, r := claimUpload("c1", "h"); w != nil || r == nil {
		t.Fatal("after the upload ended, a new claim uploads")
	} else {
		r()
	}
}

func TestWaitShared(t *testing.T) {
	done := make(chan struct{})
	close(done)
	if !waitShared(context.Background(), done) {
		t.Error("an ended upload was not seen")
	}
	// An upload that takes half the time left: the waiter gives up, to
	// upload itself.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if waitShared(ctx, make(chan struct{})) {
		t.Error("a wait for an upload that never ends reported it ended")
	}
	if ctx.Err() != nil {
		t.Errorf("gave up only when the deadline came (%v): nothing left to upload in", ctx.Err())
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if waitShared(cancelled, make(chan struct{})) {
		t.Error("a cancelled wait reported the upload ended")
	}
}
