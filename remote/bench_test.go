package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"

	"github.com/toworker/toworker/remote"
)

// Benchmarks of the master's hot path against the shared lab of TestMain.
// They report allocations per call (go test -bench . -benchmem ./remote/),
// so that a regression in the master's per-call cost shows up. Times depend
// on the machine and on sshd, the boss and the worker running on the same
// cores; allocations are the master's alone. bench/README.md has the
// side-by-side figures against OpenSSH.

// benchPool starts a pool connected to h1 whose output is discarded, and
// warms it: the connection is made and a worker is started.
func benchPool(b testing.TB, cfg remote.PoolConfig) *remote.Pool {
	b.Helper()
	cfg.Hosts = []string{"h1"}
	cfg.SSH.ConfigFile = lab.ConfigFile
	cfg.Stdout, cfg.Stderr = io.Discard, io.Discard
	p, err := remote.NewPool(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	for range 50 {
		if _, err := remote.CallOn(context.Background(), p, "h1", Noop, struct{}{}); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// BenchmarkWarmCall is one sequential no-op call on a connected host: the
// round trip master → sshd → boss → worker and back.
func BenchmarkWarmCall(b *testing.B) {
	p := benchPool(b, remote.PoolConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := remote.CallOn(ctx, p, "h1", Noop, struct{}{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEcho64K sends 64 KiB of []byte to a function that returns it.
func BenchmarkEcho64K(b *testing.B) {
	p := benchPool(b, remote.PoolConfig{})
	ctx := context.Background()
	data := make([]byte, 64<<10)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		out, err := remote.CallOn(ctx, p, "h1", Echo, data)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(out, data) {
			b.Fatal("echo returned different bytes")
		}
	}
}

// BenchmarkWarmCallInline is BenchmarkWarmCall for a function registered
// with agent.Inline: it runs in the boss, with no hop to a worker process.
func BenchmarkWarmCallInline(b *testing.B) {
	p := benchPool(b, remote.PoolConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := remote.CallOn(ctx, p, "h1", InlineNoop, struct{}{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipelined keeps 200 no-op calls in flight with Submit and Next,
// on 4 workers with Pipeline: master allocations per call, and calls/s.
func BenchmarkPipelined(b *testing.B) {
	p := benchPool(b, remote.PoolConfig{MaxPerHost: 4, Pipeline: 196})
	ctx := context.Background()
	const window = 200
	b.ReportAllocs()
	inFlight := 0
	for b.Loop() {
		for inFlight < window {
			p.Submit(ctx, remote.Job{Host: "h1", Func: Noop.Name()})
			inFlight++
		}
		r, err := p.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Wait(); err != nil {
			b.Fatal(err)
		}
		inFlight--
	}
	for ; inFlight > 0; inFlight-- {
		if r, err := p.Next(ctx); err == nil {
			r.Wait()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
