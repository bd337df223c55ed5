package remote

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/sshmux"
)

// transport is what a host connection runs the bootstrap over: an SSH
// connection of the master's own, or a session of an OpenSSH ControlMaster
// that the user already runs (ssh's ControlPath).
type transport interface {
	// open starts cmd in a new session, with env sent as ssh sends
	// SendEnv's and SetEnv's variables.
	open(ctx context.Context, cmd string, env [][2]string) (*session, error)
	// close ends the transport and its session, unblocking every read and
	// write on them. It is safe to call at any time, from any goroutine,
	// more than once.
	close()
}

// session is the running bootstrap (then the boss): its standard streams,
// and how it ended.
type session struct {
	stdin  io.WriteCloser // Close sends EOF
	stdout io.Reader
	stderr io.Reader
	// wait blocks until the session has ended; ok says whether the host
	// reported an exit status; err says why the session could not run at
	// all (a ControlMaster that refused it), nil otherwise.
	wait func() (status int, ok bool, err error)
}

// sshTransport runs the session on a connection of the master's own.
type sshTransport struct{ client *sshdial.Client }

func (t sshTransport) close() { t.client.Close() }

func (t sshTransport) open(ctx context.Context, cmd string, env [][2]string) (*session, error) {
	ch, reqs, err := t.client.OpenChannel("session", nil)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("open session: %w", err)
	}
	// The variables in the same flight as the exec; requests need no
	// window and no reply, and a refused variable is simply not set.
	for _, kv := range env {
		e := struct{ Name, Value string }{kv[0], kv[1]}
		if _, err := ch.SendRequest("env", false, ssh.Marshal(&e)); err != nil {
			ch.Close()
			return nil, fmt.Errorf("start agent: %w", err)
		}
	}
	// exec without waiting for sshd's reply: sshd handles the request
	// before the data, and a failed exec shows as the channel closing.
	if _, err := ch.SendRequest("exec", false, ssh.Marshal(struct{ Command string }{cmd})); err != nil {
		ch.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	return &session{
		stdin:  channelStdin{ch},
		stdout: ch,
		stderr: ch.Stderr(),
		wait:   func() (int, bool, error) { st, ok := exitStatus(reqs); return st, ok, nil },
	}, nil
}

// channelStdin is the session's stdin; closing it sends EOF.
type channelStdin struct{ ch ssh.Channel }

func (s channelStdin) Write(p []byte) (int, error) { return s.ch.Write(p) }
func (s channelStdin) Close() error                { return s.ch.CloseWrite() }

// exitStatus reads a session's requests until the channel closes, answers
// none, and returns the exit status if the host sent one.
func exitStatus(reqs <-chan *ssh.Request) (status int, ok bool) {
	for req := range reqs {
		if req.Type == "exit-status" && len(req.Payload) >= 4 && !ok {
			status, ok = int(binary.BigEndian.Uint32(req.Payload)), true
		}
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
	return status, ok
}

// muxTransport runs the session through the OpenSSH ControlMaster whose
// socket is path, as ssh does when one is running for the destination: no
// TCP connection, key exchange or authentication of its own.
type muxTransport struct {
	path string

	mu     sync.Mutex
	s      *sshmux.Session
	closed bool
}

// controlMasterError is a ControlMaster that could not be used (none
// running, a socket that does not speak the protocol, a refused session):
// nothing ran on the host, and the connection is made directly instead,
// as ssh makes it.
type controlMasterError struct{ err error }

func (e *controlMasterError) Error() string {
	// sshmux's errors name the socket already.
	return "ControlMaster: " + strings.TrimPrefix(e.err.Error(), "sshmux: ")
}

func (e *controlMasterError) Unwrap() error { return e.err }

func (t *muxTransport) open(ctx context.Context, cmd string, env [][2]string) (*session, error) {
	vars := make([]string, 0, len(env))
	for _, kv := range env {
		vars = append(vars, kv[0]+"="+kv[1])
	}
	s, err := sshmux.Open(ctx, t.path, cmd, vars)
	if err != nil {
		return nil, &controlMasterError{err}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		s.Close()
		return nil, fmt.Errorf("open session: %w", context.Cause(ctx))
	}
	t.s = s
	t.mu.Unlock()
	return &session{
		stdin:  s.Stdin,
		stdout: s.Stdout,
		stderr: s.Stderr,
		wait: func() (int, bool, error) {
			st, err := s.Wait()
			var refused *sshmux.RefusedError
			if errors.As(err, &refused) {
				return 0, false, &controlMasterError{err}
			}
			return st, err == nil, nil
		},
	}, nil
}

func (t *muxTransport) close() {
	t.mu.Lock()
	t.closed = true
	s := t.s
	t.mu.Unlock()
	if s != nil {
		s.Close()
	}
}
