//go:build unix

package sshmux

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
)

// fakeMaster is a unix socket on which the test plays the master's part.
type fakeMaster struct {
	path string
}

// startFake listens on a new socket and serves each connection with serve,
// in a goroutine of its own. The test's cleanup closes the listener and the
// connections and waits for the goroutines.
func startFake(t *testing.T, serve func(t *testing.T, c *net.UnixConn)) *fakeMaster {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cm")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []*net.UnixConn
	)
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(t, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &fakeMaster{path: path}
}

// clientRequest is what a client sent: its request and the descriptors.
type clientRequest struct {
	request
	stdin, stdout, stderr *os.File
}

func (r *clientRequest) closeFiles() {
	r.stdin.Close()
	r.stdout.Close()
	r.stderr.Close()
}

// readClient reads a client's hello, request and three descriptors, as the
// master does: exactly each message's length, then one byte and its
// descriptor at a time.
func readClient(c *net.UnixConn) (*clientRequest, error) {
	m, err := readMessage(c)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(m, hello()[4:]) {
		return nil, errors.New("bad client hello")
	}
	if m, err = readMessage(c); err != nil {
		return nil, err
	}
	req, err := parseRequest(m)
	if err != nil {
		return nil, err
	}
	var fds [3]*os.File
	for i := range fds {
		var b [1]byte
		oob := make([]byte, syscall.CmsgSpace(4*4))
		n, oobn, _, _, err := c.ReadMsgUnix(b[:], oob)
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		if n != 1 || b[0] != 0 || len(msgs) != 1 {
			return nil, errors.New("bad descriptor message")
		}
		got, err := syscall.ParseUnixRights(&msgs[0])
		if err != nil {
			return nil, err
		}
		if len(got) != 1 {
			return nil, errors.New("not one descriptor in a message")
		}
		fds[i] = os.NewFile(uintptr(got[0]), "fd")
	}
	return &clientRequest{request: req, stdin: fds[0], stdout: fds[1], stderr: fds[2]}, nil
}

// write writes messages to c, reporting a failure to t.
func write(t *testing.T, c *net.UnixConn, msgs ...[]byte) {
	t.Helper()
	for _, m := range msgs {
		if _, err := c.Write(m); err != nil {
			t.Errorf("fake master: %v", err)
			return
		}
	}
}

// drain reads c until the client closes it.
func drain(c *net.UnixConn) { io.Copy(io.Discard, c) }

// answering is a fake master that says hello, takes the session request
// (closing the descriptors it got), sends msgs, and then, with drainAfter,
// reads until the client hangs up; otherwise it hangs up.
func answering(drainAfter bool, msgs ...[]byte) func(*testing.T, *net.UnixConn) {
	return func(t *testing.T, c *net.UnixConn) {
		write(t, c, msg(msgHello, protocolVersion))
		r, err := readClient(c)
		if err != nil {
			t.Errorf("fake master: %v", err)
			return
		}
		r.closeFiles()
		write(t, c, msgs...)
		if drainAfter {
			drain(c)
		}
	}
}

// openCtx returns a context bounding an Open in a test.
func openCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// guard closes s when the test runs too long (so that no read or Wait hangs)
// and when it ends.
func guard(t *testing.T, s *Session) {
	timer := time.AfterFunc(30*time.Second, func() { s.Close() })
	t.Cleanup(func() {
		if !timer.Stop() {
			t.Error("session still running after 30 s: closed it")
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// waitDone waits, bounded, for s to end.
func waitDone(t *testing.T, s *Session) (int, error) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("session did not end within 20 s")
	}
	return s.Wait()
}

// A whole session against a fake master: the request is encoded as the
// master decodes it, the descriptors work in both directions, and the exit
// status comes back.
func TestFakeSession(t *testing.T) {
	got := make(chan *clientRequest, 1)
	fm := startFake(t, func(t *testing.T, c *net.UnixConn) {
		write(t, c, msg(msgHello, protocolVersion, "ext@example.org", "x"))
		r, err := readClient(c)
		if err != nil {
			t.Errorf("fake master: %v", err)
			return
		}
		defer r.closeFiles()
		got <- r
		write(t, c, msg(msgSessionOpened, requestID, 5))
		r.stderr.WriteString("err\n")
		r.stdout.WriteString("out\n")
		io.Copy(r.stdout, r.stdin) // until the client closes Stdin
		r.closeFiles()
		write(t, c, msg(msgExitMessage, 5, 7))
	})
	s, err := Open(openCtx(t), fm.path, "run this", []string{"LC_A=1", "B=two words"})
	if err != nil {
		t.Fatal(err)
	}
	guard(t, s)
	if _, err := io.WriteString(s.Stdin, "in\n"); err != nil {
		t.Fatal(err)
	}
	if err := s.Stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.OpenErr(); err != nil {
		t.Fatalf("OpenErr: %v", err)
	}
	errc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s.Stderr)
		errc <- b
	}()
	out, err := io.ReadAll(s.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "out\nin\n" {
		t.Errorf("stdout %q, want %q", out, "out\nin\n")
	}
	if e := <-errc; string(e) != "err\n" {
		t.Errorf("stderr %q, want %q", e, "err\n")
	}
	status, err := waitDone(t, s)
	if status != 7 || err != nil {
		t.Errorf("Wait = %d, %v; want 7, nil", status, err)
	}
	r := <-got
	want := request{id: requestID, escch: noEscapeChar, cmd: "run this", env: []string{"LC_A=1", "B=two words"}}
	if !equalRequest(r.request, want) {
		t.Errorf("master received %+v, want %+v", r.request, want)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if status, err := s.Wait(); status != 7 || err != nil {
		t.Errorf("Wait after Close = %d, %v; want 7, nil", status, err)
	}
}

func equalRequest(a, b request) bool {
	return a.id == b.id && a.reserved == b.reserved && a.tty == b.tty && a.x11 == b.x11 &&
		a.agent == b.agent && a.subsys == b.subsys && a.escch == b.escch && a.term == b.term &&
		a.cmd == b.cmd && slices.Equal(a.env, b.env)
}

// A refusal ends the session with a *RefusedError from both OpenErr and
// Wait, even when the master keeps the control connection open; the
// master's closing of the descriptors ends Stdout.
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typ    uint32
		reason string
	}{
		{"failure", msgFailure, "Session open refused by peer"},
		{"denied", msgPermissionDenied, "Permission denied"},
		{"control characters", msgFailure, "bad\x1b[0m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := startFake(t, answering(true, msg(tc.typ, requestID, tc.reason)))
			s, err := Open(openCtx(t), fm.path, "true", nil)
			if err != nil {
				t.Fatal(err)
			}
			guard(t, s)
			select {
			case <-s.Opened():
			case <-time.After(20 * time.Second):
				t.Fatal("no answer within 20 s")
			}
			var re *RefusedError
			if err := s.OpenErr(); !errors.As(err, &re) {
				t.Fatalf("OpenErr = %v, want a *RefusedError", err)
			}
			if re.Path != fm.path || re.Reason != tc.reason || re.Denied != (tc.typ == msgPermissionDenied) {
				t.Errorf("RefusedError %+v", re)
			}
			msg := re.Error()
			if !strings.Contains(msg, fm.path) || strings.Contains(msg, "\x1b") {
				t.Errorf("error message %q", msg)
			}
			status, err := waitDone(t, s)
			if status != -1 || err != re {
				t.Errorf("Wait = %d, %v; want -1 and the OpenErr", status, err)
			}
			if b, err := io.ReadAll(s.Stdout); len(b) != 0 || err != nil {
				t.Errorf("Stdout: %q, %v", b, err)
			}
		})
	}
}

// Open fails with a clear error, without hanging, when the master breaks
// the hello exchange.
func TestOpenBadMaster(t *testing.T) {
	for _, tc := range []struct {
		name string
		send []byte // what the master sends before closing
		want string
	}{
		{"version 3", msg(msgHello, 3), "master speaks mux protocol version 3, not 4"},
		{"huge length", []byte{0, 0x98, 0x96, 0x7f, 0, 0, 0, 1}, "message of 9999999 bytes"},
		{"short length", []byte{0, 0, 0, 2, 0, 1}, "message of 2 bytes, too short"},
		{"not a hello", msg(msgSessionOpened, requestID, 1), "unexpected message type 0x80000006"},
		{"no version", msg(msgHello), "has no version"},
		{"bad extension", msg(msgHello, protocolVersion, "name"), "malformed extension"},
		{"cut short", []byte{0, 0, 0, 100, 0, 0, 0, 1}, "ended inside a message of 100 bytes"},
		{"cut in length", []byte{0, 0}, "ended inside a message's length"},
		{"silent", nil, "master closed the control connection before its hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := startFake(t, func(t *testing.T, c *net.UnixConn) {
				write(t, c, tc.send)
			})
			start := time.Now()
			s, err := Open(openCtx(t), fm.path, "true", nil)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "sshmux: control socket "+fm.path+": ") {
				t.Errorf("error %q, want one naming the socket and saying %q", err, tc.want)
			}
			if NoMaster(err) {
				t.Errorf("NoMaster(%v) = true", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Open took %v", d)
			}
		})
	}
}

// Wait and OpenErr report what went wrong after the hello exchange.
func TestSessionErrors(t *testing.T) {
	opened := msg(msgSessionOpened, requestID, 5)
	for _, tc := range []struct {
		name       string
		send       [][]byte // the master's messages after the client's request
		openErr    string   // "" for nil
		waitErr    string   // "" for nil
		waitStatus int
	}{
		{"closed before answering", nil, "before answering the session request", "before answering the session request", -1},
		{"closed without exit status", [][]byte{opened}, "", "without an exit status", -1},
		{"exit status", [][]byte{opened, msg(msgExitMessage, 5, 0)}, "", "", 0},
		{"tty alloc fail ignored", [][]byte{opened, msg(msgTTYAllocFail, 5), msg(msgExitMessage, 5, 255)}, "", "", 255},
		{"huge length", [][]byte{opened, {0, 0x98, 0x96, 0x7f}}, "", "message of 9999999 bytes", -1},
		{"unknown type", [][]byte{opened, msg(0x12345678)}, "", "unexpected message type 0x12345678", -1},
		{"other request id", [][]byte{msg(msgSessionOpened, 9, 5)}, "to request 9", "to request 9", -1},
		{"exit before opened", [][]byte{msg(msgExitMessage, 5, 0)}, "exit message before the session opened", "exit message before", -1},
		{"exit of other session", [][]byte{opened, msg(msgExitMessage, 6, 0)}, "", "exit message for session 6, not 5", -1},
		{"second exit", [][]byte{opened, msg(msgExitMessage, 5, 0), msg(msgExitMessage, 5, 1)}, "", "second exit message", -1},
		{"second answer", [][]byte{opened, opened}, "", "second answer", -1},
		{"short opened", [][]byte{msg(msgSessionOpened, requestID)}, "too short", "too short", -1},
		{"short exit", [][]byte{opened, msg(msgExitMessage, 5)}, "", "too short", -1},
		{"short failure", [][]byte{msg(msgFailure, requestID, []byte{0, 0, 0, 9, 'x'})}, "too short", "too short", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := startFake(t, answering(false, tc.send...))
			s, err := Open(openCtx(t), fm.path, "true", nil)
			if err != nil {
				t.Fatal(err)
			}
			guard(t, s)
			status, err := waitDone(t, s)
			check := func(what string, err error, want string) {
				t.Helper()
				var re *RefusedError
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: %v, want nil", what, err)
				case want == "":
				case err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fm.path):
					t.Errorf("%s: %v, want an error naming the socket and saying %q", what, err, want)
				case errors.As(err, &re):
					t.Errorf("%s: %v is a *RefusedError", what, err)
				}
			}
			check("Wait", err, tc.waitErr)
			check("OpenErr", s.OpenErr(), tc.openErr)
			if status != tc.waitStatus {
				t.Errorf("Wait status %d, want %d", status, tc.waitStatus)
			}
		})
	}
}

// Open respects its context: a deadline or a cancellation ends a hello
// exchange that a master never answers, and a done context fails at once.
func TestOpenContext(t *testing.T) {
	fm := startFake(t, func(t *testing.T, c *net.UnixConn) { drain(c) })

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Open(ctx, fm.path, "true", nil); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), fm.path) {
		t.Errorf("Open with a deadline: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open with a deadline of 100 ms took %v", d)
	}

	ctx, cancel = context.WithCancel(t.Context())
	timer := time.AfterFunc(50*time.Millisecond, cancel)
	defer timer.Stop()
	if _, err := Open(ctx, fm.path, "true", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Open cancelled: %v, want context.Canceled", err)
	}

	if _, err := Open(ctx, fm.path, "true", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled context: %v, want context.Canceled", err)
	}
}

// Close unblocks a Read of Stdout and a Write of Stdin in progress, ends
// the control connection (on which a master ends the session), is
// idempotent, and makes Wait report the session closed.
func TestClose(t *testing.T) {
	masterSawEOF := make(chan struct{})
	fm := startFake(t, func(t *testing.T, c *net.UnixConn) {
		write(t, c, msg(msgHello, protocolVersion))
		r, err := readClient(c)
		if err != nil {
			t.Errorf("fake master: %v", err)
			return
		}
		defer r.closeFiles() // holds the pipes open, reads nothing
		write(t, c, msg(msgSessionOpened, requestID, 5))
		drain(c)
		close(masterSawEOF)
	})
	s, err := Open(openCtx(t), fm.path, "sleep 30", nil)
	if err != nil {
		t.Fatal(err)
	}
	guard(t, s)
	if err := s.OpenErr(); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Stdout.Read(make([]byte, 10))
		readErr <- err
	}()
	writeErr := make(chan error, 1)
	go func() {
		_, err := s.Stdin.Write(make([]byte, 1<<20)) // more than a pipe holds
		writeErr <- err
	}()
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for what, c := range map[string]chan error{"Read of Stdout": readErr, "Write to Stdin": writeErr} {
		select {
		case err := <-c:
			if err == nil {
				t.Errorf("%s succeeded after Close", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still blocked 10 s after Close", what)
		}
	}
	select {
	case <-masterSawEOF:
	case <-time.After(10 * time.Second):
		t.Fatal("master did not see the control connection end")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if status, err := s.Wait(); status != -1 || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Wait after Close = %d, %v; want -1 and net.ErrClosed", status, err)
	}
}

// Close before the master answers makes OpenErr report the closing.
func TestCloseBeforeAnswer(t *testing.T) {
	fm := startFake(t, func(t *testing.T, c *net.UnixConn) {
		write(t, c, msg(msgHello, protocolVersion))
		drain(c)
	})
	s, err := Open(openCtx(t), fm.path, "true", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.OpenErr(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("OpenErr after Close = %v, want net.ErrClosed", err)
	}
}

// Requests the master would reject fail before connecting.
func TestOpenBadRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  string
		env  []string
		want string
	}{
		{"NUL in command", "a\x00b", nil, "command contains a NUL byte"},
		{"NUL in environment", "true", []string{"A=\x00"}, "contains a NUL byte"},
		{"too long", strings.Repeat("x", maxMessage), nil, "longer than the master accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(t.Context(), "/nonexistent/cm", tc.cmd, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) || NoMaster(err) {
				t.Errorf("Open: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// The largest request the master accepts: 7 uint32, 3 strings (the
	// command's 4+len(cmd) bytes) and one environment entry of 4+8 bytes.
	cmd := strings.Repeat("x", maxMessage-7*4-3*4-(4+8))
	env := []string{"LC_A=xyz"}
	b, err := newSessionRequest(cmd, env)
	if err != nil || len(b) != 4+maxMessage {
		t.Fatalf("request of the largest size: %d bytes, %v", len(b), err)
	}
	if _, err := newSessionRequest(cmd+"x", env); err == nil {
		t.Error("request one byte longer than the largest accepted")
	}
}

// NoMaster is true when nothing listens at the path, and false for other
// errors (which ssh reports).
func TestNoMaster(t *testing.T) {
	dir := t.TempDir()
	stale := sshdtest.StaleSocket(t)
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		noMaster   bool
		want       string
	}{
		{"missing", filepath.Join(dir, "missing"), true, "no such file or directory"},
		{"missing directory", filepath.Join(dir, "missing", "cm"), true, "no such file or directory"},
		{"stale socket", stale, true, "connection refused"},
		{"regular file", file, false, "not a socket but a regular file"},
		{"directory", dir, false, "not a socket but a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.path, "true", nil)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if got := NoMaster(err); got != tc.noMaster {
				t.Errorf("NoMaster(%v) = %v, want %v", err, got, tc.noMaster)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "sshmux: control socket "+tc.path+": ") {
				t.Errorf("error %q, want one naming the socket and saying %q", err, tc.want)
			}
		})
	}
	for _, err := range []error{nil, errors.New("x"), &RefusedError{}} {
		if NoMaster(err) {
			t.Errorf("NoMaster(%v) = true", err)
		}
	}
}

// A socket of another user is not used: it could be anyone's, answering
// for the host. Root's is (a master run by root for this user).
func TestOtherUsersSocket(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the socket to another user")
	}
	var accepted atomic.Int32
	fm := startFake(t, func(t *testing.T, c *net.UnixConn) { accepted.Add(1) })
	if err := os.Lchown(fm.path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Open(openCtx(t), fm.path, "true", nil)
	if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") || NoMaster(err) {
		t.Errorf("Open of another user's socket: %v, want an error naming its owner", err)
	}
	if _, err := Forward(openCtx(t), fm.path, "127.0.0.1", 22); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("Forward through another user's socket: %v, want an error naming its owner", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the socket was connected to %d times", n)
	}
}
