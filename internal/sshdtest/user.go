package sshdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// ThrowawayMarker is the GECOS (comment) field of users created by
// EnsureUser. Only such users ever have their login shell changed by this
// package.
const ThrowawayMarker = "sshdtest throwaway user"

var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)

// EnsureUser makes sure a throwaway local user exists, for tests of login
// shells: if name is missing it runs `useradd -m -p '*' -s shell -c
// ThrowawayMarker name` (root only; the password "*" allows no password
// login but, unlike useradd's default "!", does not lock the account, which
// sshd would otherwise refuse). If name is a throwaway user with
// another shell, it sets the shell with usermod. Any other existing user is
// left as it is. An empty shell means /bin/sh.
func EnsureUser(name, shell string) error {
	if !userRE.MatchString(name) {
		return fmt.Errorf("sshdtest: invalid user name %q", name)
	}
	if shell == "" {
		shell = "/bin/sh"
	}
	if !strings.HasPrefix(shell, "/") || strings.ContainsAny(shell, ":\n") {
		return fmt.Errorf("sshdtest: login shell %q must be an absolute path", shell)
	}
	pw, err := lookupPasswd(name)
	if err != nil {
		return err
	}
	if pw != nil && (pw.shell == shell || !pw.throwaway()) {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("sshdtest: creating or changing user %q needs root", name)
	}
	var cmd *exec.Cmd
	if pw == nil {
		// Password "*": no password login, but not "locked" ("!"), which
		// sshd without PAM would refuse even for key logins.
		cmd = exec.Command("useradd", "-m", "-p", "*", "-s", shell, "-c", ThrowawayMarker, name)
	} else {
		cmd = exec.Command("usermod", "-s", shell, name)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sshdtest: %s: %v: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// passwd is an entry of the password database.
type passwd struct {
	name, gecos, home, shell string
	uid, gid                 int
}

func (p *passwd) throwaway() bool { return p.gecos == ThrowawayMarker }

// lookupPasswd returns name's entry from the password database (through
// getent, so NSS is honoured), or nil if there is none.
func lookupPasswd(name string) (*passwd, error) {
	out, err := exec.Command("getent", "passwd", name).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 { // key not found
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sshdtest: getent passwd %s: %w", name, err)
	}
	f := strings.Split(strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), ":")
	if len(f) != 7 || f[0] != name {
		return nil, fmt.Errorf("sshdtest: getent passwd %s: unexpected output %q", name, out)
	}
	p := &passwd{name: f[0], gecos: f[4], home: f[5], shell: f[6]}
	if p.uid, err = strconv.Atoi(f[2]); err == nil {
		p.gid, err = strconv.Atoi(f[3])
	}
	if err != nil {
		return nil, fmt.Errorf("sshdtest: getent passwd %s: %w", name, err)
	}
	return p, nil
}
