package sshdial

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Connections made through the same chain of ProxyJump hops share the
// hops' connections while any of them is open, as ssh's ControlMaster
// would share them. A fan-out to the hosts behind a bastion then makes one
// connection to the bastion, not one per host: one handshake and one login
// there instead of hundreds, and no burst of unauthenticated connections
// for the bastion's sshd to drop (its MaxStartups, 10:30:100 by default,
// refuses a share of them beyond ten at once).
//
// A hop is shared when it is the same spec resolved to the same Target
// (every field: host, port, user, keys, options), through the same hops
// before it. The last connection to close a hop closes it. A hop that
// breaks is not handed out again; a connection that fails through a hop
// that turns out to be broken is tried once more through a new one.

// jumpHop is one hop of a chain: the ProxyJump spec, its resolved target
// and the options it is dialled with.
type jumpHop struct {
	spec   string
	target *Target
	opts   Options
}

// sharedJump is the connection to one hop, with the hop before it held
// while this one is open.
type sharedJump struct {
	key   string
	ready chan struct{} // closed once the dial is done
	c     *Client       // set before ready is closed; nil if err
	err   error
	prev  *sharedJump

	// guarded by jumpPool.mu
	refs int
	gone bool // closed or broken: not handed out again
}

// jumpPool holds the hops open or being opened, by chain key.
var jumpPool struct {
	mu sync.Mutex
	m  map[string]*sharedJump
}

// jumpKey names a chain of hops: the spec and the whole resolved target
// of each, in order.
func jumpKey(hops []jumpHop) string {
	var b strings.Builder
	for _, h := range hops {
		fmt.Fprintf(&b, "%s\x00%#v\x00", h.spec, *h.target)
	}
	return b.String()
}

// chain returns the clients of e's hops, first hop first.
func (e *sharedJump) chain() []*Client {
	var out []*Client
	for j := e; j != nil; j = j.prev {
		out = append([]*Client{j.c}, out...)
	}
	return out
}

// acquireJump returns the connection to the last of hops, open and held
// for the caller, who must release it. It connects (each hop before it
// through acquireJump too) unless another connection already holds or is
// opening the same chain, whose result it then waits for.
func acquireJump(ctx context.Context, hops []jumpHop) (*sharedJump, error) {
	key := jumpKey(hops)
	for attempt := 0; ; attempt++ {
		jumpPool.mu.Lock()
		e := jumpPool.m[key]
		if e == nil {
			e = &sharedJump{key: key, ready: make(chan struct{}), refs: 1}
			if jumpPool.m == nil {
				jumpPool.m = make(map[string]*sharedJump)
			}
			jumpPool.m[key] = e
			jumpPool.mu.Unlock()
			if err := e.connect(ctx, hops); err != nil {
				return nil, err
			}
			return e, nil
		}
		e.refs++
		jumpPool.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			e.release()
			last := hops[len(hops)-1]
			return nil, fmt.Errorf("sshdial: jump host %s: %w", last.spec,
				&DialError{Host: last.target.Alias, Addr: targetAddr(last.target), Err: ctx.Err(), ctxErr: ctx.Err()})
		}
		if e.err == nil {
			jumpPool.mu.Lock()
			gone := e.gone
			jumpPool.mu.Unlock()
			if !gone {
				return e, nil
			}
		}
		err := e.err
		e.release()
		// Another connection's dial gave up (its own context ended), or the
		// hop broke since: try again while this caller's context lasts.
		retry := err == nil || errors.Is(err, context.Canceled)
		if !retry || ctx.Err() != nil || attempt >= 2 {
			if err == nil {
				err = fmt.Errorf("sshdial: jump host %s: the connection closed", hops[len(hops)-1].spec)
			}
			return nil, err
		}
	}
}

// connect dials e's hop, through the hop before it, and publishes the
// result. On failure e leaves the pool.
func (e *sharedJump) connect(ctx context.Context, hops []jumpHop) error {
	defer close(e.ready)
	n := len(hops)
	h := hops[n-1]
	if n > 1 {
		// Through the previous hop's ControlMaster, when it has one.
		if c, ok, err := throughMaster(ctx, hops[n-2].target, h.target, &h.opts); ok {
			if err != nil {
				err = fmt.Errorf("sshdial: jump host %s: %w", h.spec, err)
				e.fail(err)
				return err
			}
			e.publish(c)
			return nil
		}
	}
	var via *Client
	if n > 1 {
		prev, err := acquireJump(ctx, hops[:n-1])
		if err != nil {
			e.fail(err)
			return err
		}
		e.prev, via = prev, prev.c
	}
	c, err := dial(ctx, h.target, &h.opts, via)
	if err != nil {
		if e.prev != nil {
			e.prev.release()
			e.prev = nil
		}
		err = fmt.Errorf("sshdial: jump host %s: %w", h.spec, err)
		e.fail(err)
		return err
	}
	e.publish(c)
	return nil
}

// publish makes c the hop's connection.
func (e *sharedJump) publish(c *Client) {
	e.c = c
	// Owned by the connection: ends when it closes, whoever closes it.
	go func() {
		c.Client.Wait()
		e.drop()
	}()
}

// fail records err and takes e out of the pool.
func (e *sharedJump) fail(err error) {
	e.err = err
	e.drop()
}

// drop marks e gone: later dials open a new connection to the hop.
func (e *sharedJump) drop() {
	jumpPool.mu.Lock()
	defer jumpPool.mu.Unlock()
	e.gone = true
	if jumpPool.m[e.key] == e {
		delete(jumpPool.m, e.key)
	}
}

// broken reports whether the connection to any hop of e's chain no longer
// answers (a request that needs a reply fails at once on a closed
// connection), and drops those that do not.
func (e *sharedJump) broken() bool {
	found := false
	for j := e; j != nil; j = j.prev {
		if _, _, err := j.c.Client.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			j.drop()
			found = true
		}
	}
	return found
}

// release gives back one hold on e; the last one closes its connection and
// releases the hop before it.
func (e *sharedJump) release() {
	jumpPool.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last {
		e.gone = true
		if jumpPool.m[e.key] == e {
			delete(jumpPool.m, e.key)
		}
	}
	jumpPool.mu.Unlock()
	if !last {
		return
	}
	if e.c != nil {
		e.c.Close()
	}
	if e.prev != nil {
		e.prev.release()
	}
}
