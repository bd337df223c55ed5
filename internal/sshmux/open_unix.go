//go:build unix

package sshmux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Open connects to the ControlMaster listening at path and asks it to run
// cmd in a new session, with env ("NAME=VALUE") sent as ssh sends a mux
// client's environment. It returns once the hello exchange is done and the
// request and the session's descriptors are sent: it does not wait for the
// remote session to open, so what the caller writes to Stdin at once leaves
// with the session's opening. ctx bounds Open only.
//
// When no master listens at path, the error satisfies NoMaster.
func Open(ctx context.Context, path, cmd string, env []string) (*Session, error) {
	req, err := newSessionRequest(cmd, env)
	if err != nil {
		return nil, fmt.Errorf("sshmux: control socket %s: %w", path, err)
	}
	return start(ctx, path, req, 3)
}

// Forward connects to the ControlMaster listening at path and asks it for
// a connection from its host to host:port, as `ssh -W host:port` through a
// master does (a direct-tcpip channel): what ProxyJump needs of a jump host
// that has a master. It waits for the master's answer, a round trip to the
// jump host, which makes the connection there; a refusal (the host is
// unreachable from the jump host, or the jump host forbids forwarding) is a
// *RefusedError. ctx bounds Forward only.
//
// When no master listens at path, the error satisfies NoMaster.
func Forward(ctx context.Context, path, host string, port int) (net.Conn, error) {
	req, err := newForwardRequest(host, port)
	if err != nil {
		return nil, fmt.Errorf("sshmux: control socket %s: %w", path, err)
	}
	s, err := start(ctx, path, req, 2)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.Opened():
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("sshmux: control socket %s: forwarding to %s: %w", path, net.JoinHostPort(host, strconv.Itoa(port)), ctx.Err())
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if err := s.OpenErr(); err != nil {
		s.Close()
		var refused *RefusedError
		if errors.As(err, &refused) {
			refused.forward = addr
		}
		return nil, err
	}
	return &forwardConn{s: s, path: path, addr: addr}, nil
}

// start connects to path, sends the hello, req and the remote ends of
// nfds pipes (stdin, stdout, then stderr), and reads the master's hello.
func start(ctx context.Context, path string, req []byte, nfds int) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sshmux: control socket %s: %w", path, err)
	}
	// The master checks that its clients are its user's; ssh does not
	// check the master. A socket of another user (where a ControlPath is
	// in a shared directory) could be anyone's, listening to what is
	// sent to the host and answering for it: not used.
	if fi, err := os.Stat(path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() && st.Uid != 0 {
			return nil, fmt.Errorf("sshmux: control socket %s: owned by uid %d, not by this user (uid %d) or root: not used", path, st.Uid, os.Getuid())
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, dialError(ctx, path, err)
	}
	conn := c.(*net.UnixConn)

	// The caller's ends (stdin's write end, the others' read ends) and the
	// master's.
	var local, remote [3]*os.File
	closeAll := func(files *[3]*os.File) {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := range nfds {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(&local)
			closeAll(&remote)
			conn.Close()
			return nil, fmt.Errorf("sshmux: control socket %s: %w", path, err)
		}
		if i == 0 {
			local[i], remote[i] = w, r
		} else {
			local[i], remote[i] = r, w
		}
	}

	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0)) // unblocks the exchange
	})

	// The master reads exactly each message's length before it receives a
	// descriptor, so everything can go at once; its hello, sent when it
	// accepted the connection, is read afterwards.
	werr := send(conn, req, remote[:nfds])
	closeAll(&remote) // the master has its copies: EOF works
	br := bufio.NewReader(conn)
	herr := readHello(br)

	switch {
	case !stop() || ctx.Err() != nil:
		err = ctx.Err()
	case herr != nil:
		// A master that rejects the client (another version, another
		// user) closes the connection, possibly before the request is
		// written: what it sent says more than the failed write.
		err = herr
	case werr != nil:
		err = fmt.Errorf("sending the request: %w", werr)
	}
	if err == nil {
		if err = conn.SetDeadline(time.Time{}); err != nil {
			err = fmt.Errorf("clearing the deadline: %w", err)
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if _, ok := ctx.Deadline(); ok {
				err = context.DeadlineExceeded
			}
		}
		closeAll(&local)
		conn.Close()
		return nil, fmt.Errorf("sshmux: control socket %s: %w", path, err)
	}
	return newSession(path, conn, br, local[0], local[1], local[2]), nil
}

// send writes the hello and the request, then passes the descriptors in
// fds, one per message of one byte, as ssh's mm_send_fd does.
func send(conn *net.UnixConn, req []byte, fds []*os.File) error {
	if _, err := conn.Write(append(hello(), req...)); err != nil {
		return err
	}
	for _, f := range fds {
		n, oobn, err := conn.WriteMsgUnix([]byte{0}, syscall.UnixRights(int(f.Fd())), nil)
		if err != nil {
			return err
		}
		if n != 1 || oobn == 0 {
			return fmt.Errorf("descriptor passing wrote %d bytes and %d bytes of control data", n, oobn)
		}
	}
	return nil
}

// readHello reads and checks the master's hello.
func readHello(br *bufio.Reader) error {
	m, err := readMessage(br)
	if err != nil {
		if err == io.EOF {
			return errors.New("master closed the control connection before its hello (is it another user's master?)")
		}
		return fmt.Errorf("reading the master's hello: %w", err)
	}
	return parseHello(m)
}

// dialError describes the failure to connect to path.
func dialError(ctx context.Context, path string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sshmux: control socket %s: %w", path, ctx.Err())
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK) {
		// Linux refuses connections to files that are not sockets.
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Type() != fs.ModeSocket {
			what := "a file of mode " + fi.Mode().Type().String()
			switch t := fi.Mode().Type(); {
			case t == 0:
				what = "a regular file"
			case t == fs.ModeDir:
				what = "a directory"
			case t == fs.ModeNamedPipe:
				what = "a named pipe"
			case t&fs.ModeDevice != 0:
				what = "a device"
			}
			return fmt.Errorf("sshmux: control socket %s: not a socket but %s", path, what)
		}
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // without "dial unix path"
	}
	return fmt.Errorf("sshmux: control socket %s: %w", path, err)
}
