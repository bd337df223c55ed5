package sshdial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/toworker/toworker/internal/sshmux"
)

// maxJumpDepth bounds ProxyJump hosts that jump through themselves.
const maxJumpDepth = 10

// DialError reports a failure to reach the host or to complete the SSH
// handshake with it: a refused connection, a name that does not resolve, a
// timeout (of ctx or ConnectTimeout), a failed ProxyCommand or jump
// channel. errors.Is sees through it to the net or context error, so
// errors.Is(err, syscall.ECONNREFUSED) and errors.Is(err,
// context.DeadlineExceeded) work.
type DialError struct {
	// Host is the host as given to Resolve; Addr is "hostname:port" (or the
	// ProxyCommand).
	Host string
	Addr string
	// Err is the cause.
	Err error

	ctxErr error // the context's error when it ended the attempt
}

// Error reads like ssh's "ssh: connect to host ..." and names the host.
func (e *DialError) Error() string {
	msg := fmt.Sprintf("ssh: connect to host %s (%s): %v", e.Host, e.Addr, e.Err)
	if e.ctxErr != nil && !errors.Is(e.Err, e.ctxErr) {
		msg += " (" + e.ctxErr.Error() + ")"
	}
	return msg
}

// Unwrap returns the cause and, when the context ended the attempt, the
// context's error.
func (e *DialError) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{e.Err, e.ctxErr}
	}
	return []error{e.Err}
}

// Client is an SSH connection made by Dial.
type Client struct {
	*ssh.Client
	// Target is the host this client is connected to.
	Target *Target

	jumps     []*Client   // ProxyJump hops, first hop first
	jump      *sharedJump // the last hop, held while this client is open
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Close closes the connection, stops and joins its keepalive goroutine, and
// lets go of its ProxyJump hops, which close (last hop first) unless
// another connection still goes through them. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		err := c.Client.Close()
		if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
			err = nil
		}
		c.wg.Wait()
		if c.jump != nil {
			c.jump.release()
		}
		c.closeErr = err
	})
	return c.closeErr
}

// Dial connects to t, verifies its host key and authenticates, like ssh.
// ctx bounds connecting and the handshake (so does t.ConnectTimeout, per
// hop); once Dial returns, ctx no longer matters. TCP connections get
// TCP_NODELAY. With t.ProxyJump, each hop is resolved through the
// configuration (Options.ConfigFile, HomeDir, Warn and Stdin carry over;
// the hop's own user and port come from the hop spec) and the next
// connection is made over it, or, when the hop has an OpenSSH ControlMaster
// running (its ControlSocket), asked of that master as ssh -W would ask it,
// with no login of Dial's own to the hop; with t.ProxyCommand, the command's stdin and
// stdout are the connection. With t.ServerAliveInterval, keepalive requests
// are sent and the client is closed after ServerAliveCountMax missed
// replies.
func Dial(ctx context.Context, t *Target, o Options) (*Client, error) {
	if t == nil {
		return nil, errors.New("sshdial: nil Target")
	}
	return dial(ctx, t, &o, nil)
}

func dial(ctx context.Context, t *Target, o *Options, via *Client) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, &DialError{Host: t.Alias, Addr: targetAddr(t), Err: err, ctxErr: err}
	}
	if via != nil || len(t.ProxyJump) == 0 {
		return dialOne(ctx, t, o, via, "")
	}
	if o.depth >= maxJumpDepth {
		return nil, fmt.Errorf("sshdial: %s: too many nested ProxyJump hosts", t.Alias)
	}
	hops := make([]jumpHop, len(t.ProxyJump))
	for i, spec := range t.ProxyJump {
		h, err := parseHop(spec)
		if err != nil {
			return nil, fmt.Errorf("sshdial: %s: ProxyJump %s: %v", t.Alias, spec, err)
		}
		ho := Options{
			ConfigFile: o.ConfigFile, HomeDir: o.HomeDir, Warn: o.Warn, Stdin: o.Stdin,
			User: h.User, Port: h.Port, noProxy: i > 0, depth: o.depth + 1,
		}
		ht, err := ResolveContext(ctx, h.Host, ho)
		if err != nil {
			return nil, fmt.Errorf("sshdial: jump host %s: %w", spec, err)
		}
		hops[i] = jumpHop{spec: spec, target: ht, opts: ho}
	}
	if c, ok, err := throughMaster(ctx, hops[len(hops)-1].target, t, o); ok {
		return c, err
	}
	for attempt := 0; ; attempt++ {
		j, err := acquireJump(ctx, hops)
		if err != nil {
			return nil, err
		}
		c, err := dialOne(ctx, t, o, j.c, "")
		if err == nil {
			c.jumps, c.jump = j.chain(), j
			return c, nil
		}
		// Through a shared hop that broke since it was opened: once more,
		// through a new one.
		again := attempt == 0 && ctx.Err() == nil && j.broken()
		j.release()
		if !again {
			return nil, err
		}
	}
}

// hopSilence is how long a jump host may leave unanswered the close of a
// connection through it whose context ended before it is taken for dead.
const hopSilence = 5 * time.Second

func targetAddr(t *Target) string {
	return net.JoinHostPort(t.HostName, strconv.Itoa(t.Port))
}

// throughMaster connects to t through the ControlMaster of hop, the jump
// host before it, as ssh -J does when that jump host has a master running
// (ssh -W then asks the master for the connection): no connection, key
// exchange or login of its own to the jump host, whose login may need
// what a Go client cannot do (a FIDO touch, a one-time password). ok is
// false when no master answers there; the caller then connects through the
// jump host itself, as ssh does (silently when there is no master, after a
// warning when the socket does not work).
func throughMaster(ctx context.Context, hop, t *Target, o *Options) (c *Client, ok bool, err error) {
	sock := hop.ControlSocket()
	if sock == "" {
		return nil, false, nil
	}
	c, err = dialOne(ctx, t, o, nil, sock)
	var unusable *masterUnusableError
	if errors.As(err, &unusable) {
		if !sshmux.NoMaster(unusable.err) {
			fmt.Fprintf(o.warn(), "sshdial: jump host %s: ControlMaster: %v; connecting to it directly\n",
				hop.Alias, strings.TrimPrefix(unusable.err.Error(), "sshmux: "))
		}
		return nil, false, nil
	}
	return c, true, err
}

// masterUnusableError is a jump host's ControlMaster socket that did not
// answer as a master: nothing was asked of the jump host.
type masterUnusableError struct{ err error }

func (e *masterUnusableError) Error() string { return e.err.Error() }
func (e *masterUnusableError) Unwrap() error { return e.err }

// dialOne connects to t directly, over via, through the ControlMaster
// listening at master (a jump host's), or through its ProxyCommand, and
// runs the SSH handshake.
func dialOne(ctx context.Context, t *Target, o *Options, via *Client, master string) (*Client, error) {
	hctx := ctx
	if t.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, t.ConnectTimeout)
		defer cancel()
	}
	addr := targetAddr(t)
	dialErr := func(err error) error {
		de := &DialError{Host: t.Alias, Addr: addr, Err: err}
		if cerr := hctx.Err(); cerr != nil {
			de.ctxErr = cerr
		}
		return de
	}

	cfg := &ssh.ClientConfig{User: t.User}
	cfg.Rand = entropy
	for _, a := range []struct {
		list []string
		kind string
		dst  *[]string
		key  string
	}{
		{t.KexAlgorithms, "kex", &cfg.KeyExchanges, "KexAlgorithms"},
		{t.Ciphers, "cipher", &cfg.Ciphers, "Ciphers"},
		{t.MACs, "mac", &cfg.MACs, "MACs"},
	} {
		if a.list == nil {
			continue
		}
		if *a.dst = supportedOnly(a.list, a.kind); len(*a.dst) == 0 {
			return nil, fmt.Errorf("sshdial: %s: none of %s %s is supported", t.Alias, a.key, strings.Join(a.list, ","))
		}
	}
	hk, err := newHostKeyChecker(t, o)
	if err != nil {
		return nil, err
	}
	cfg.HostKeyCallback = hk.check
	cfg.HostKeyAlgorithms = hk.algorithms()
	if t.HostKeyAlgorithms != nil {
		// As configured, in its order: ssh reorders by known_hosts only
		// its own default list.
		if cfg.HostKeyAlgorithms = supportedOnly(t.HostKeyAlgorithms, "hostkey"); len(cfg.HostKeyAlgorithms) == 0 {
			return nil, fmt.Errorf("sshdial: %s: none of HostKeyAlgorithms %s is supported", t.Alias, strings.Join(t.HostKeyAlgorithms, ","))
		}
	}
	auth, err := buildAuth(t, o)
	if err != nil {
		return nil, err
	}
	defer auth.close()
	cfg.Auth = []ssh.AuthMethod{auth.method()}

	var conn net.Conn
	switch {
	case via != nil:
		conn, err = via.DialContext(hctx, "tcp", addr)
		if err != nil {
			var oce *ssh.OpenChannelError
			if errors.As(err, &oce) && oce.Reason == ssh.ConnectionFailed && strings.Contains(oce.Message, "refused") {
				// Let errors.Is(err, syscall.ECONNREFUSED) work through a
				// jump host too.
				err = fmt.Errorf("%w (%w)", err, syscall.ECONNREFUSED)
			}
			return nil, dialErr(err)
		}
	case master != "":
		conn, err = sshmux.Forward(hctx, master, t.HostName, t.Port)
		if err != nil {
			var refused *sshmux.RefusedError
			if !errors.As(err, &refused) && hctx.Err() == nil {
				return nil, &masterUnusableError{err}
			}
			return nil, dialErr(err)
		}
	case t.ProxyCommand != "":
		addr = t.ProxyCommand
		conn, err = startProxyCommand(t.ProxyCommand, o.warn())
		if err != nil {
			return nil, dialErr(err)
		}
	default:
		conn, err = dialTCP(hctx, t, addr)
		if err != nil {
			return nil, dialErr(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		conn = quickAck(conn)
	}

	// The handshake has no context of its own: closing the connection when
	// the context ends interrupts it. Through a jump host that is only a
	// close message to the hop, which a hop whose link went silent never
	// answers: if the handshake has not ended hopSilence later, the hop's
	// connection is closed, with every connection through it.
	handshook := make(chan struct{})
	stop := context.AfterFunc(hctx, func() {
		conn.Close()
		if via == nil {
			return
		}
		t := time.NewTimer(hopSilence)
		defer t.Stop()
		select {
		case <-handshook:
		case <-t.C:
			via.Close()
		}
	})
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	close(handshook)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		conn.Close()
		return nil, dialErr(fmt.Errorf("ssh handshake: %w", hctx.Err()))
	}
	if err != nil {
		conn.Close()
		return nil, classify(err, t, hk, auth, dialErr)
	}
	c := &Client{Client: ssh.NewClient(sc, chans, reqs), Target: t, stop: make(chan struct{})}
	if t.ServerAliveInterval > 0 {
		c.wg.Add(1)
		go c.keepalive(t.ServerAliveInterval, t.ServerAliveCountMax, o.warn())
	}
	return c, nil
}

// dialTCP makes a direct connection to addr as ssh does: from
// BindAddress, to the AddressFamily's addresses, up to ConnectionAttempts
// times a second apart.
func dialTCP(ctx context.Context, t *Target, addr string) (net.Conn, error) {
	var d net.Dialer
	if t.BindAddress != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(t.BindAddress)}
	}
	network := "tcp"
	switch t.AddressFamily {
	case "inet":
		network = "tcp4"
	case "inet6":
		network = "tcp6"
	}
	for attempt := 1; ; attempt++ {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil || attempt >= t.ConnectionAttempts || ctx.Err() != nil {
			return conn, err
		}
		pause := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			pause.Stop()
			return nil, err
		case <-pause.C:
		}
	}
}

// classify turns a handshake error into HostKeyError, KeyFileError,
// AuthError or DialError.
func classify(err error, t *Target, hk *hostKeyChecker, auth *authState, dialErr func(error) error) error {
	if e := hk.failure(); e != nil {
		return e
	}
	if e := auth.getSignErr(); e != nil {
		return e
	}
	var kfe *KeyFileError
	if errors.As(err, &kfe) {
		return kfe
	}
	auth.mu.Lock()
	started := auth.started
	auth.mu.Unlock()
	if strings.Contains(err.Error(), "unable to authenticate") ||
		started && strings.Contains(err.Error(), "Too many authentication failures") {
		if len(auth.encrypted) > 0 {
			pm := &ssh.PassphraseMissingError{}
			return &KeyFileError{File: auth.encrypted[0], Err: errors.Join(&encryptedError{pm}, err)}
		}
		return &AuthError{Host: t.Alias, User: t.User, Tried: auth.tried(), Skipped: auth.skipped, Err: err}
	}
	return dialErr(fmt.Errorf("ssh handshake: %w", err))
}

// keepalive sends keepalive@openssh.com requests every interval and closes
// the client once more than max in a row went unanswered, like ssh's
// ServerAliveInterval/ServerAliveCountMax. It ends when the client closes.
func (c *Client) keepalive(interval time.Duration, max int, warn io.Writer) {
	defer c.wg.Done()
	dead := make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.Client.Wait()
		close(dead)
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var missed atomic.Int64
	for {
		select {
		case <-c.stop:
			return
		case <-dead:
			return
		case <-tick.C:
		}
		if missed.Add(1) > int64(max) {
			fmt.Fprintf(warn, "Timeout, server %s not responding.\n", c.Target.Alias)
			c.Client.Close()
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if _, _, err := c.Client.SendRequest("keepalive@openssh.com", true, nil); err == nil {
				missed.Store(0)
			}
		}()
	}
}

// cmdConn is a net.Conn over a ProxyCommand's stdin and stdout.
type cmdConn struct {
	cmd  *exec.Cmd
	r    *os.File // the command's stdout
	w    *os.File // the command's stdin
	once sync.Once
}

// startProxyCommand runs command with sh -c (exec'ed, like ssh), its
// stderr going to warn.
func startProxyCommand(command string, warn io.Writer) (net.Conn, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", "exec "+command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, warn
	// A grandchild keeping stderr open must not make Close hang.
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("ProxyCommand %q: %w", command, err)
	}
	return &cmdConn{cmd: cmd, r: outR, w: inW}, nil
}

// Read reads the command's stdout.
func (c *cmdConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write writes to the command's stdin.
func (c *cmdConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// Close closes the pipes and kills and reaps the command.
func (c *cmdConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		c.r.Close()
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	})
	return nil
}

// pipeAddr is the address of both ends of a ProxyCommand connection.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "proxycommand" }

// LocalAddr returns a placeholder address.
func (c *cmdConn) LocalAddr() net.Addr { return pipeAddr{} }

// RemoteAddr returns a placeholder address.
func (c *cmdConn) RemoteAddr() net.Addr { return pipeAddr{} }

// SetDeadline and friends set the deadline on the pipes.
func (c *cmdConn) SetDeadline(t time.Time) error {
	if err := c.r.SetDeadline(t); err != nil {
		return err
	}
	return c.w.SetDeadline(t)
}

// SetReadDeadline sets the read deadline of the stdout pipe.
func (c *cmdConn) SetReadDeadline(t time.Time) error { return c.r.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the stdin pipe.
func (c *cmdConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }
