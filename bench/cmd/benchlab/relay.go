package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// relay is a TCP relay on loopback that delays every chunk by a fixed
// one-way delay in each direction, so that a round trip through it costs
// rtt: a slow link in front of one sshd. It timestamps each chunk, so the
// round trips of a protocol can be counted from outside.
//
// TCP's own handshake cannot be delayed by a user-space relay (the kernel
// completes it at once); the upstream connection is made one one-way delay
// after the client's, as the server would see it, and callers add 1 RTT for
// the client's connect.
type relay struct {
	ln     net.Listener
	target string
	delay  time.Duration // one way: rtt/2

	mu     sync.Mutex // guards conns and closed
	conns  []*relayConn
	closed bool
	wg     sync.WaitGroup
}

// chunk is one read on one side of a relayed connection.
type chunk struct {
	At time.Duration // since the client connected
	Up bool          // client to server
	N  int
}

type relayConn struct {
	start time.Time
	c, s  net.Conn // client side, server side (s nil until dialled)

	mu     sync.Mutex // guards chunks
	chunks []chunk
}

const relayQueue = 512 // chunks in flight per direction; a full queue holds back the reader

func newRelay(target string, rtt time.Duration) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, delay: rtt / 2}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *relay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		rc := &relayConn{start: time.Now(), c: c}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns = append(r.conns, rc)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.handle(rc)
		}()
	}
}

type delayed struct {
	at   time.Time
	data []byte
}

func (r *relay) handle(rc *relayConn) {
	up := make(chan delayed, relayQueue)
	down := make(chan delayed, relayQueue)
	var wg sync.WaitGroup
	// Client to server: read at once (the client's first bytes leave with
	// its connect), deliver once the upstream connection exists.
	sconn := make(chan net.Conn, 1)
	wg.Add(2)
	go func() { defer wg.Done(); r.read(rc, rc.c, true, up) }()
	go func() {
		defer wg.Done()
		time.Sleep(r.delay) // the SYN's way to the server
		s, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			rc.c.Close()
			close(sconn)
			for range up {
			}
			return
		}
		rc.mu.Lock()
		rc.s = s
		rc.mu.Unlock()
		sconn <- s
		close(sconn)
		r.write(s, up)
	}()
	s, ok := <-sconn
	if ok {
		wg.Add(2)
		go func() { defer wg.Done(); r.read(rc, s, false, down) }()
		go func() { defer wg.Done(); r.write(rc.c, down) }()
	}
	wg.Wait()
	rc.c.Close()
	if s != nil {
		s.Close()
	}
}

// read reads src into the queue, timestamped, until EOF or error.
func (r *relay) read(rc *relayConn, src net.Conn, isUp bool, q chan<- delayed) {
	defer close(q)
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			rc.mu.Lock()
			rc.chunks = append(rc.chunks, chunk{At: now.Sub(rc.start), Up: isUp, N: n})
			rc.mu.Unlock()
			q <- delayed{at: now.Add(r.delay), data: buf[:n]}
		}
		if err != nil {
			return
		}
	}
}

// write delivers queued chunks to dst when their delay has passed, then
// half-closes dst. After a write error it drains the queue.
func (r *relay) write(dst net.Conn, q <-chan delayed) {
	broken := false
	for d := range q {
		if broken {
			continue
		}
		if w := time.Until(d.at); w > 0 {
			time.Sleep(w)
		}
		if _, err := dst.Write(d.data); err != nil {
			broken = true
			dst.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && !broken {
		tc.CloseWrite()
	}
}

// connTrace is what the relay saw of one connection.
type connTrace struct {
	start  time.Time // when the client connected
	chunks []chunk
}

// take returns and forgets the traces of every connection so far.
func (r *relay) take() []connTrace {
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	var out []connTrace
	for _, c := range conns {
		c.mu.Lock()
		out = append(out, connTrace{start: c.start, chunks: append([]chunk(nil), c.chunks...)})
		c.mu.Unlock()
	}
	return out
}

// Close stops the relay and every connection through it, and waits for its
// goroutines.
func (r *relay) Close() error {
	r.mu.Lock()
	r.closed = true
	conns := r.conns
	r.mu.Unlock()
	err := r.ln.Close()
	for _, c := range conns {
		c.c.Close()
		c.mu.Lock()
		if c.s != nil {
			c.s.Close()
		}
		c.mu.Unlock()
	}
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Flight is what one side sent before the other side's next bytes.
type Flight struct {
	Up    bool    `json:"up"` // master (client) to server
	At    float64 `json:"at_rtt"`
	End   float64 `json:"end_rtt"`
	Bytes int     `json:"bytes"`
}

// flights groups chunks into flights, times in units of rtt.
func flights(cs []chunk, rtt time.Duration) []Flight {
	var fs []Flight
	for _, c := range cs {
		at := float64(c.At) / float64(rtt)
		if n := len(fs); n > 0 && fs[n-1].Up == c.Up {
			fs[n-1].End = at
			fs[n-1].Bytes += c.N
			continue
		}
		fs = append(fs, Flight{Up: c.Up, At: at, End: at, Bytes: c.N})
	}
	return fs
}

var _ io.Closer = (*relay)(nil)
