// Package faultssh is an in-process SSH server (golang.org/x/crypto/ssh) for
// tests that must inject faults a real sshd cannot: a host that accepts TCP
// connections but never finishes the SSH handshake, a host that answers one
// byte at a time, and a "malicious host" that runs the master's bootstrap
// command and then speaks hostile frames.
//
// It is for tests only; never use it in production. It accepts any public
// key (or only Options.AuthorizedKey), its host key is generated in memory,
// and it listens on loopback.
//
// A Server runs in the test's own process, so an Exec handler can share Go
// values with the test: it is the place to script a fake agent (see
// AcceptAgent) and to report what the master sent it.
package faultssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options configure a Server. The zero value is a well-behaved SSH server
// that rejects every exec request.
type Options struct {
	// Stall makes the server accept TCP connections and never write a
	// byte: the client's handshake never completes. What the client sends
	// is read and discarded, so its writes never block.
	Stall bool
	// ByteDelay, when positive, delays every byte the server writes by
	// this much (one byte per ByteDelay): a host that answers slowly. The
	// handshake itself runs at that pace.
	ByteDelay time.Duration
	// Exec handles each exec request of a session channel, in its own
	// goroutine, with the command line and the channel; its return value is
	// sent as the exit status before the channel is closed. Nil rejects
	// exec requests.
	Exec func(cmd string, ch ssh.Channel) (exitStatus uint32)
	// HostKey is the server's host key; nil means a fresh ed25519 key.
	HostKey ssh.Signer
	// AuthorizedKey, when set, is the only public key accepted; nil
	// accepts any public key.
	AuthorizedKey ssh.PublicKey
	// Addr is the address to listen on; empty means "127.0.0.1:0".
	Addr string
}

// Server is a running fault-injecting SSH server.
type Server struct {
	// Addr is the "host:port" the server listens on.
	Addr string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey

	opts     Options
	cfg      *ssh.ServerConfig
	ln       net.Listener
	accepted atomic.Int64
	execs    atomic.Int64

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // the accept loop and every connection's goroutines
}

// Start starts a server.
func Start(opts Options) (*Server, error) {
	signer := opts.HostKey
	if signer == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("faultssh: host key: %w", err)
		}
		if signer, err = ssh.NewSignerFromKey(priv); err != nil {
			return nil, fmt.Errorf("faultssh: host key: %w", err)
		}
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if opts.AuthorizedKey != nil && string(key.Marshal()) != string(opts.AuthorizedKey.Marshal()) {
				return nil, errors.New("faultssh: key not authorized")
			}
			return nil, nil
		},
	}
	cfg.AddHostKey(signer)
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultssh: %w", err)
	}
	s := &Server{
		Addr:    ln.Addr().String(),
		HostKey: signer.PublicKey(),
		opts:    opts,
		cfg:     cfg,
		ln:      ln,
		conns:   make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Accepted returns the number of TCP connections accepted so far.
func (s *Server) Accepted() int { return int(s.accepted.Load()) }

// Execs returns the number of exec requests handled so far.
func (s *Server) Execs() int { return int(s.execs.Load()) }

// KnownHostsLine returns the known_hosts line for the server's address and
// host key ("[127.0.0.1]:port ssh-ed25519 ...").
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{s.Addr}, s.HostKey)
}

// Close stops listening, closes every connection and waits for the
// server's goroutines, Exec handlers included (a handler blocked on its
// channel returns once the connection is closed). It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.accepted.Add(1)
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		}()
	}
}

// serve handles one TCP connection.
func (s *Server) serve(c net.Conn) {
	if s.opts.Stall {
		io.Copy(io.Discard, c)
		return
	}
	var conn net.Conn = c
	if s.opts.ByteDelay > 0 {
		conn = &slowConn{Conn: c, delay: s.opts.ByteDelay}
	}
	sc, chans, reqs, err := ssh.NewServerConn(conn, s.cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); ssh.DiscardRequests(reqs) }()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "faultssh: only session channels")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ch, creqs)
		}()
	}
}

// session serves one session channel: env and similar requests are
// accepted and ignored, the first exec request runs Options.Exec.
func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	started := false
	for req := range reqs {
		switch req.Type {
		case "exec":
			if started || s.opts.Exec == nil || len(req.Payload) < 4 {
				req.Reply(false, nil)
				continue
			}
			n := binary.BigEndian.Uint32(req.Payload)
			if int(n) > len(req.Payload)-4 {
				req.Reply(false, nil)
				continue
			}
			cmd := string(req.Payload[4 : 4+n])
			started = true
			s.execs.Add(1)
			req.Reply(true, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				code := s.opts.Exec(cmd, ch)
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
				ch.CloseWrite()
				ch.Close()
			}()
		case "env", "pty-req", "window-change":
			if req.WantReply {
				req.Reply(req.Type == "env", nil)
			}
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

// slowConn writes one byte per delay.
type slowConn struct {
	net.Conn
	delay time.Duration
	mu    sync.Mutex // one writer at a time, so that bytes keep their order
}

func (c *slowConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range p {
		time.Sleep(c.delay)
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}
