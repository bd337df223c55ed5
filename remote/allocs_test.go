package remote_test

import (
	"context"
	"testing"

	"github.com/toworker/toworker/remote"
)

// The master's allocations per warm call, counted over the whole process
// (the caller, x/crypto/ssh's goroutines, the pool's reader): a count that
// does not depend on the machine, so that a regression on the hot path
// (a goroutine, a buffer or a timer per call) fails here instead of only
// showing in `make bench`. BenchmarkWarmCall and BenchmarkPipelined report
// the same with -benchmem.
func TestAllocationsPerWarmCall(t *testing.T) {
	// Measured with go1.26, with and without -race: 19 for CallOn, 15
	// for Submit and Wait (no typed decoding). The limits leave a little
	// room for a toolchain's changes, not for another per-call object.
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		limit float64
		cfg   remote.PoolConfig
		call  func(p *remote.Pool) error
	}{
		{"CallOn", 22, remote.PoolConfig{}, func(p *remote.Pool) error {
			_, err := remote.CallOn(ctx, p, "h1", Noop, struct{}{})
			return err
		}},
		{"Submit and Wait, pipelined pool", 18, remote.PoolConfig{MaxPerHost: 2, Pipeline: 8}, func(p *remote.Pool) error {
			_, err := p.Submit(ctx, remote.Job{Host: "h1", Func: Noop.Name()}).Wait()
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := benchPool(t, tt.cfg)
			var err error
			n := testing.AllocsPerRun(500, func() {
				if e := tt.call(p); e != nil && err == nil {
					err = e
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%.0f allocations per call", n)
			if n > tt.limit {
				t.Errorf("%s: %.0f allocations per warm no-op call in the master, want at most %.0f", tt.name, n, tt.limit)
			}
		})
	}
}
