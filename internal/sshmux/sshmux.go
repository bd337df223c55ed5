package sshmux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
)

// Message types and constants of OpenSSH's mux protocol (PROTOCOL.mux).
const (
	protocolVersion = 4

	msgHello            = 0x00000001
	msgNewSession       = 0x10000002
	msgNewStdioFwd      = 0x10000008
	msgPermissionDenied = 0x80000002
	msgFailure          = 0x80000003
	msgExitMessage      = 0x80000004
	msgSessionOpened    = 0x80000006
	msgTTYAllocFail     = 0x80000008

	// maxMessage is the largest message either side accepts: the master
	// drops a client whose packet is longer (CHANNEL_MUX_MAX_PACKET).
	maxMessage = 256 << 10

	// requestID is the id of a Session's one request (ssh numbers its
	// requests from 0 and sends an alive check first, then the session).
	requestID = 1

	noEscapeChar = 0xffffffff
)

// Session is a command running in a session of a ControlMaster.
type Session struct {
	Stdin  io.WriteCloser // Close sends EOF to the command
	Stdout io.Reader      // ends with EOF when the session's output ends
	Stderr io.Reader

	path                  string
	conn                  net.Conn
	stdin, stdout, stderr *os.File

	opened  chan struct{} // closed once openErr is set
	openErr error
	done    chan struct{} // closed once status and err are set and conn is closed
	status  int
	err     error

	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// newSession returns a Session over conn, whose hello exchange is done and
// to which the request and the remote ends of the pipes were sent, and
// starts its reader of r, which reads conn. stderr is nil for a
// forwarding, which has none.
func newSession(path string, conn net.Conn, r io.Reader, stdin, stdout, stderr *os.File) *Session {
	s := &Session{
		Stdin:  stdin,
		Stdout: stdout,
		path:   path,
		conn:   conn,
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
		opened: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if stderr != nil {
		s.Stderr = stderr
	}
	go s.read(r)
	return s
}

// Opened returns a channel that is closed once the master has answered the
// session request, or once the control connection has ended without an
// answer (Close included). OpenErr then tells which.
func (s *Session) Opened() <-chan struct{} { return s.opened }

// OpenErr waits until the channel that Opened returns is closed and reports
// how the session's opening went: nil when the master opened the session, a
// *RefusedError when it refused it, in which case nothing ran, or the error
// that ended the control connection before the master answered, in which
// case whether the command started is unknown.
func (s *Session) OpenErr() error {
	<-s.opened
	return s.openErr
}

// Done returns a channel that is closed when the session has ended, that is
// when the control connection has: Wait then returns at once.
func (s *Session) Done() <-chan struct{} { return s.done }

// Wait waits for the session to end and returns the command's exit status
// as the master reported it. err is non-nil when the master refused the
// session (a *RefusedError), when it closed the control connection without
// an exit status (as when the command was killed by a signal, or the master
// or its connection went away), when Close ended the session first, or on
// a protocol error; status is -1 then.
//
// The master ends the session only once it has written all the command's
// output to Stdout and Stderr: read them concurrently with Wait.
func (s *Session) Wait() (status int, err error) {
	<-s.done
	return s.status, s.err
}

// Close ends the session: it closes the control connection, on which the
// master ends the session if it has not ended yet, and the caller's ends of
// the pipes, which unblocks any Read of Stdout or Stderr and any Write of
// Stdin in progress. It waits for the Session's reader of the control
// connection to return. Close is idempotent and safe to call from any
// goroutine.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		var errs []error
		for _, c := range []io.Closer{s.conn, s.stdin, s.stdout, s.stderr} {
			if f, ok := c.(*os.File); ok && f == nil {
				continue
			}
			if err := c.Close(); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		<-s.done
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("sshmux: control socket %s: closing: %w", s.path, err)
		}
	})
	return s.closeErr
}

// read reads the master's replies until the control connection ends, then
// sets the Session's results and closes the connection.
func (s *Session) read(r io.Reader) {
	var st replies
	err := func() error {
		for {
			p, err := readMessage(r)
			if err != nil {
				return err
			}
			answered := st.answered
			if err := st.handle(p); err != nil {
				return err
			}
			if st.answered && !answered {
				if st.refused != nil {
					// Nothing more comes: the session is over.
					st.refused.Path = s.path
					s.openErr = st.refused
					close(s.opened)
					return st.refused
				}
				close(s.opened)
			}
		}
	}()
	s.conn.Close()

	switch {
	case st.refused != nil:
		err = st.refused
	case st.exited && (err == io.EOF || s.closing.Load()):
		err = nil
	case s.closing.Load():
		err = fmt.Errorf("sshmux: control socket %s: session closed before the master reported an exit status: %w", s.path, net.ErrClosed)
	case err == io.EOF && !st.answered:
		err = fmt.Errorf("sshmux: control socket %s: master closed the control connection before answering the session request", s.path)
	case err == io.EOF:
		err = fmt.Errorf("sshmux: control socket %s: master closed the control connection without an exit status", s.path)
	default:
		err = fmt.Errorf("sshmux: control socket %s: %w", s.path, err)
	}
	if !st.answered {
		s.openErr = err
		close(s.opened)
	}
	s.status, s.err = -1, err
	if err == nil {
		s.status = int(st.status)
	}
	close(s.done)
}

// RefusedError is the master's refusal of a session (MUX_S_PERMISSION_DENIED
// or MUX_S_FAILURE): nothing ran.
type RefusedError struct {
	Path   string // the control socket
	Denied bool   // permission denied (MUX_S_PERMISSION_DENIED) rather than failure
	Reason string // the master's reason, such as "Session open refused by peer"

	forward string // the host:port of a refused forwarding
}

// Error describes the refusal, naming the control socket and the master's
// reason.
func (e *RefusedError) Error() string {
	what := "refused the session"
	if e.Denied {
		what = "denied permission for the session"
	}
	if e.forward != "" {
		what = "refused the forwarding to " + e.forward
		if e.Denied {
			what = "denied permission for the forwarding to " + e.forward
		}
	}
	return fmt.Sprintf("sshmux: control socket %s: master %s: %s", e.Path, what, printable(e.Reason))
}

// NoMaster reports whether err, an error from Open, means that no master
// listens at the path: the socket does not exist (ENOENT) or nothing accepts
// on it (ECONNREFUSED, as with a stale socket left by a killed master). ssh
// then connects directly without a word; other errors it reports before
// connecting directly.
func NoMaster(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// printable returns s, quoted if it holds characters that are not
// printable.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// protocolError is a message from the master that breaks the protocol.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

func protoErrorf(format string, args ...any) error {
	return &protocolError{fmt.Sprintf(format, args...)}
}

// hello returns the client's MUX_MSG_HELLO message.
func hello() []byte {
	b := binary.BigEndian.AppendUint32(nil, 8)
	b = binary.BigEndian.AppendUint32(b, msgHello)
	return binary.BigEndian.AppendUint32(b, protocolVersion)
}

// newSessionRequest returns the MUX_C_NEW_SESSION message that ssh sends
// for cmd without a terminal, forwardings or escape character, with env.
func newSessionRequest(cmd string, env []string) ([]byte, error) {
	if strings.IndexByte(cmd, 0) >= 0 {
		return nil, errors.New("the command contains a NUL byte")
	}
	// The length, 7 uint32 and 3 strings, then the environment.
	n := 4 + 7*4 + 3*4 + len(cmd)
	for _, e := range env {
		if strings.IndexByte(e, 0) >= 0 {
			return nil, fmt.Errorf("environment entry %q contains a NUL byte", e)
		}
		n += 4 + len(e)
	}
	if n-4 > maxMessage {
		return nil, fmt.Errorf("session request of %d bytes is longer than the master accepts (%d)", n-4, maxMessage)
	}
	b := make([]byte, 4, n) // the length, set below
	b = binary.BigEndian.AppendUint32(b, msgNewSession)
	b = binary.BigEndian.AppendUint32(b, requestID)
	b = appendString(b, "")                 // reserved
	b = binary.BigEndian.AppendUint32(b, 0) // want tty
	b = binary.BigEndian.AppendUint32(b, 0) // want X11 forwarding
	b = binary.BigEndian.AppendUint32(b, 0) // want agent forwarding
	b = binary.BigEndian.AppendUint32(b, 0) // subsystem
	b = binary.BigEndian.AppendUint32(b, noEscapeChar)
	b = appendString(b, "") // terminal type
	b = appendString(b, cmd)
	for _, e := range env {
		b = appendString(b, e)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

// newForwardRequest returns the MUX_C_NEW_STDIO_FWD message that ssh -W
// host:port sends.
func newForwardRequest(host string, port int) ([]byte, error) {
	if host == "" || strings.IndexByte(host, 0) >= 0 || len(host) > 1024 {
		return nil, fmt.Errorf("invalid host name %q to forward to", host)
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("invalid port %d to forward to", port)
	}
	b := make([]byte, 4, 4+4*4+2*4+len(host))
	b = binary.BigEndian.AppendUint32(b, msgNewStdioFwd)
	b = binary.BigEndian.AppendUint32(b, requestID)
	b = appendString(b, "") // reserved
	b = appendString(b, host)
	b = binary.BigEndian.AppendUint32(b, uint32(port))
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

// forwardConn is a forwarding's two pipes as a net.Conn.
type forwardConn struct {
	s    *Session
	path string
	addr string
}

func (c *forwardConn) Read(p []byte) (int, error)  { return c.s.stdout.Read(p) }
func (c *forwardConn) Write(p []byte) (int, error) { return c.s.stdin.Write(p) }

// Close ends the forwarding.
func (c *forwardConn) Close() error { return c.s.Close() }

func (c *forwardConn) LocalAddr() net.Addr  { return muxAddr(c.path) }
func (c *forwardConn) RemoteAddr() net.Addr { return muxAddr(c.addr) }

func (c *forwardConn) SetDeadline(t time.Time) error {
	return errors.Join(c.s.stdout.SetReadDeadline(t), c.s.stdin.SetWriteDeadline(t))
}
func (c *forwardConn) SetReadDeadline(t time.Time) error  { return c.s.stdout.SetReadDeadline(t) }
func (c *forwardConn) SetWriteDeadline(t time.Time) error { return c.s.stdin.SetWriteDeadline(t) }

// muxAddr is an address of a forwarding: the control socket's path, or the
// host:port the master connects to.
type muxAddr string

func (a muxAddr) Network() string { return "ssh-mux" }
func (a muxAddr) String() string  { return string(a) }

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// readMessage reads one message from r and returns its payload, which is
// at least 4 bytes long (a type). It returns io.EOF when r ends between
// messages. A connection reset counts as its end: a master that closes the
// connection before reading all the client sent resets it.
func readMessage(r io.Reader) ([]byte, error) {
	var h [4]byte
	if n, err := io.ReadFull(r, h[:]); err != nil {
		if n == 0 && errors.Is(err, syscall.ECONNRESET) {
			err = io.EOF
		}
		if n > 0 && (err == io.ErrUnexpectedEOF || errors.Is(err, syscall.ECONNRESET)) {
			err = protoErrorf("control connection ended inside a message's length")
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > maxMessage {
		return nil, protoErrorf("message of %d bytes (at most %d are allowed)", n, maxMessage)
	}
	if n < 4 {
		return nil, protoErrorf("message of %d bytes, too short for a type", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF || errors.Is(err, syscall.ECONNRESET) {
			return nil, protoErrorf("control connection ended inside a message of %d bytes", n)
		}
		return nil, err
	}
	return p, nil
}

// payload decodes the fields of a message.
type payload []byte

func (p *payload) uint32() (uint32, bool) {
	if len(*p) < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(*p)
	*p = (*p)[4:]
	return v, true
}

func (p *payload) string() (string, bool) {
	n, ok := p.uint32()
	if !ok || uint64(n) > uint64(len(*p)) {
		return "", false
	}
	s := string((*p)[:n])
	*p = (*p)[n:]
	return s, true
}

// parseHello checks the master's MUX_MSG_HELLO message, whose extensions it
// ignores.
func parseHello(m []byte) error {
	p := payload(m)
	typ, ok := p.uint32()
	if !ok {
		return protoErrorf("message of %d bytes, too short for a type", len(m))
	}
	if typ != msgHello {
		return protoErrorf("unexpected message type 0x%08x instead of the master's hello", typ)
	}
	v, ok := p.uint32()
	if !ok {
		return protoErrorf("hello message of %d bytes has no version", len(m))
	}
	if v != protocolVersion {
		return protoErrorf("master speaks mux protocol version %d, not %d", v, protocolVersion)
	}
	for len(p) > 0 {
		_, ok1 := p.string()
		_, ok2 := p.string()
		if !ok1 || !ok2 {
			return protoErrorf("malformed extension in the master's hello")
		}
	}
	return nil
}

// replies follows the master's replies to a session request.
type replies struct {
	answered bool          // the master answered the request
	refused  *RefusedError // its answer was a refusal
	session  uint32        // the session (channel) id, once opened
	exited   bool          // an exit message came
	status   uint32        // the exit value it carried
}

// handle processes the message m, which is at least 4 bytes long.
func (st *replies) handle(m []byte) error {
	p := payload(m)
	typ, ok := p.uint32()
	if !ok {
		return protoErrorf("message of %d bytes, too short for a type", len(m))
	}
	short := func() error {
		return protoErrorf("message of type 0x%08x is too short (%d bytes)", typ, len(m))
	}
	switch typ {
	case msgSessionOpened, msgPermissionDenied, msgFailure:
		rid, ok := p.uint32()
		if !ok {
			return short()
		}
		if st.answered {
			return protoErrorf("second answer (message type 0x%08x) to the session request", typ)
		}
		if rid != requestID {
			return protoErrorf("answer (message type 0x%08x) to request %d, not to the session request %d", typ, rid, requestID)
		}
		if typ == msgSessionOpened {
			if st.session, ok = p.uint32(); !ok {
				return short()
			}
		} else {
			reason, ok := p.string()
			if !ok {
				return short()
			}
			st.refused = &RefusedError{Denied: typ == msgPermissionDenied, Reason: reason}
		}
		st.answered = true
	case msgExitMessage:
		sid, ok1 := p.uint32()
		v, ok2 := p.uint32()
		if !ok1 || !ok2 {
			return short()
		}
		switch {
		case !st.answered:
			return protoErrorf("exit message before the session opened")
		case sid != st.session:
			return protoErrorf("exit message for session %d, not %d", sid, st.session)
		case st.exited:
			return protoErrorf("second exit message")
		}
		st.exited, st.status = true, v
	case msgTTYAllocFail:
		// Only sent when a terminal was asked for; nothing to do.
	default:
		return protoErrorf("unexpected message type 0x%08x", typ)
	}
	return nil
}
