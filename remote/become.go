package remote

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/toworker/toworker/internal/sshdial"
)

// ErrBecome is wrapped by the error of a connection whose agent could not be
// started as AgentOptions.Become: sudo (or doas) wants a password, refuses,
// does not know the user, or is not installed.
var ErrBecome = errors.New("remote: cannot run the agent as another user")

// becomeError says why the agent could not be started as the Become user.
// It matches ErrBecome; the bootstrap error it replaces (with the host's
// stderr) is its cause.
type becomeError struct {
	msg   string
	cause error
}

func (e *becomeError) Error() string        { return e.msg }
func (e *becomeError) Is(target error) bool { return target == ErrBecome }
func (e *becomeError) Unwrap() error        { return e.cause }

// portableUser reports whether s is what AgentOptions.Become accepts: a
// portable user name of letters, digits, '_', '.' and '-', not starting with
// '.' or '-', which needs no quoting in any shell and cannot be taken for an
// option. (Not a regexp: compiling one would cost every agent's start.)
func portableUser(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

func checkBecome(user string) error {
	if user == "" || portableUser(user) {
		return nil
	}
	return fmt.Errorf("remote: AgentOptions.Become %q is not a user name toworker accepts (letters, digits, '_', '.', '-', not starting with '-' or '.')", user)
}

// becomeCommand wraps the bootstrap script so that it runs as user: the
// login shell runs /bin/sh with the script as $0; that sh runs the script
// through `sudo -n -u user /bin/sh -c "$0"`, or doas where sudo is missing.
// -n makes either fail at once, with a message on stderr, where it would
// ask for a password. Both keep stdin and stdout (the protocol) as they are.
// sudo resets the environment (HOME becomes the user's, XDG_CACHE_HOME is
// dropped), which is why the script finds the cache through ~user.
func becomeCommand(user, script string) string {
	wrap := strings.Join([]string{
		`if command -v sudo >/dev/null 2>&1; then exec sudo -n -u ` + user + ` /bin/sh -c "$0"; fi`,
		`if command -v doas >/dev/null 2>&1; then exec doas -n -u ` + user + ` /bin/sh -c "$0"; fi`,
		`echo "toworker-fail cannot run the agent as ` + user + `: neither sudo nor doas is installed on this host"`,
		`exit 106`,
	}, "; ")
	return "exec /bin/sh -c '" + wrap + "' '" + script + "'"
}

// becomeRefusals are what sudo -n and doas -n print when they will not run
// the command, and what toworker says instead.
var becomeRefusals = []struct{ text, why string }{
	{"sudo: a password is required", "sudo requires a password for %[1]s on %[2]s: add a NOPASSWD rule letting %[3]s run /bin/sh as %[1]s (for example \"%[3]s ALL=(%[1]s) NOPASSWD: /bin/sh\" in /etc/sudoers.d/), or log in as %[1]s instead of using Become"},
	{"you must have a tty", "sudo on %[2]s insists on a terminal (requiretty): add \"Defaults:%[3]s !requiretty\" to its sudoers, or log in as %[1]s instead of using Become"},
	{"sudo: unknown user", "sudo on %[2]s does not know the user %[1]s"},
	{"is not in the sudoers file", "sudo on %[2]s does not let %[3]s run anything: add a NOPASSWD rule letting %[3]s run /bin/sh as %[1]s"},
	{"is not allowed to execute", "sudo on %[2]s does not let %[3]s run /bin/sh as %[1]s: add a NOPASSWD rule for it"},
	{"doas: Authentication required", "doas requires a password for %[1]s on %[2]s: add a \"permit nopass %[3]s as %[1]s cmd /bin/sh\" rule to doas.conf, or log in as %[1]s instead of using Become"},
	{"doas: Authorization required", "doas requires a password for %[1]s on %[2]s: add a \"permit nopass %[3]s as %[1]s cmd /bin/sh\" rule to doas.conf, or log in as %[1]s instead of using Become"},
	{"doas: Operation not permitted", "doas on %[2]s does not let %[3]s run /bin/sh as %[1]s: add a \"permit nopass %[3]s as %[1]s cmd /bin/sh\" rule to doas.conf"},
	{"doas: unknown user", "doas on %[2]s does not know the user %[1]s"},
	{"neither sudo nor doas is installed", "neither sudo nor doas is installed on %[2]s, needed to run the agent as %[1]s"},
}

// libcHint adds advice to a bootstrap error whose host output shows an
// agent that could not start for want of the C library it was linked
// against (a master built with cgo, run on a host with an older glibc or
// with musl).
func libcHint(err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	if !strings.Contains(s, "GLIBC_") && !strings.Contains(s, "ld-linux") && !strings.Contains(s, "libc.so") {
		return err
	}
	return fmt.Errorf("%w; the agent (the master's executable) is linked against the build machine's C library: build the master with CGO_ENABLED=0 to run it on any Linux host", err)
}

// explain turns a failed bootstrap of host (reached as t) into a clear
// error when it failed because sudo or doas would not run the agent as the
// Become user. stderr returns what the host wrote on stderr so far; as it
// arrives apart from the exit status, it is waited for a little.
func (s *agentSet) explain(host string, t *sshdial.Target, stderr func() string, err error) error {
	if err == nil || s.opts.Become == "" {
		return err
	}
	login := "the login user"
	if t != nil && t.User != "" {
		login = t.User
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		text := stderr() + "\n" + err.Error()
		for _, r := range becomeRefusals {
			if strings.Contains(text, r.text) {
				return &becomeError{msg: fmt.Sprintf(r.why, s.opts.Become, host, login), cause: err}
			}
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "exited with status") && !strings.Contains(err.Error(), "session ended") {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
