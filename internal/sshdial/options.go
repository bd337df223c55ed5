package sshdial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// Options are command-line style overrides, like ssh's flags. The zero value
// reads ~/.ssh/config and /etc/ssh/ssh_config like ssh.
type Options struct {
	// ConfigFile is ssh's -F: when set, only this file is read (as a user
	// configuration file); /etc/ssh/ssh_config is not.
	ConfigFile string
	// User is ssh's -l. It wins over a user given as "user@host", over
	// -o User=... and over the configuration files.
	User string
	// Port is ssh's -p. It wins over -o Port=... and over the files.
	Port int
	// IdentityFiles are ssh's -i files, tried before the configuration's.
	// Unlike ssh (which warns and goes on), a -i file that does not exist is
	// an error at Dial time.
	IdentityFiles []string
	// JumpHosts is ssh's -J: a comma-separated list of [user@]host[:port]
	// (or ssh://[user@]host[:port]) hops, or "none". It overrides the
	// configuration's ProxyJump and ProxyCommand.
	JumpHosts string
	// Options are ssh's -o arguments, "Key=Value" or "Key Value". They
	// override the configuration files; for a keyword given twice the first
	// value wins, like ssh.
	Options []string
	// HomeDir is the local home directory used for ~ and %d; default $HOME,
	// then os.UserHomeDir and the password database.
	HomeDir string
	// Warn receives warnings (for example when a host key is not verified
	// because StrictHostKeyChecking=no); default os.Stderr.
	Warn io.Writer
	// Stdin is used for passphrase and host key prompts, and only when it is
	// a terminal; default none (never prompt).
	Stdin *os.File

	// noProxy makes Resolve ignore ProxyJump and ProxyCommand from the
	// configuration; set for the later hops of a ProxyJump chain, which ssh
	// reaches with "-J earlier-hops" (and so with ProxyCommand none).
	noProxy bool
	// lookupHost resolves a name for CanonicalizeHostname; nil means
	// net.DefaultResolver.LookupHost. Set by tests.
	lookupHost func(ctx context.Context, name string) ([]string, error)
	// depth counts nested ProxyJump resolutions, to stop loops.
	depth int
}

func (o *Options) warn() io.Writer {
	if o.Warn != nil {
		return o.Warn
	}
	return os.Stderr
}

// homeDir returns the local home directory used for ~ and %d.
func (o *Options) homeDir() (string, error) {
	if o.HomeDir != "" {
		return o.HomeDir, nil
	}
	if h := os.Getenv("HOME"); h != "" {
		return h, nil
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return h, nil
	}
	u, err := user.Current()
	if err != nil || u.HomeDir == "" {
		return "", fmt.Errorf("sshdial: cannot determine the home directory: %v", err)
	}
	return u.HomeDir, nil
}

// localUser returns the name of the local user (ssh's %u).
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	for _, v := range []string{"USER", "LOGNAME"} {
		if s := os.Getenv(v); s != "" {
			return s
		}
	}
	return strconv.Itoa(os.Getuid())
}

// parseOption parses one -o argument the way ssh reads a configuration line:
// the keyword runs up to white space or '=', then optional white space, at
// most one '=', optional white space, and the rest is the value (surrounding
// double quotes removed).
func parseOption(s string) (key, value string, err error) {
	s = strings.TrimLeft(s, " \t")
	i := strings.IndexAny(s, " \t=")
	if i < 0 {
		if s == "" {
			return "", "", errors.New("empty -o option")
		}
		return "", "", fmt.Errorf("-o %s: missing argument", s)
	}
	key, rest := s[:i], s[i:]
	if key == "" {
		return "", "", fmt.Errorf("-o %q: missing keyword", s)
	}
	rest = strings.TrimLeft(rest, " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	rest = strings.TrimRight(rest, " \t\r\n")
	if len(rest) >= 2 && rest[0] == '"' && rest[len(rest)-1] == '"' {
		rest = rest[1 : len(rest)-1]
	}
	if rest == "" {
		return "", "", fmt.Errorf("-o %s: missing argument", key)
	}
	return key, rest, nil
}

// hop is one parsed ProxyJump / -J element.
type hop struct {
	User string // "" when not given
	Host string // without brackets
	Port int    // 0 when not given
}

// String renders h the way it can be given to -J again.
func (h hop) String() string {
	var b strings.Builder
	if h.User != "" {
		b.WriteString(h.User)
		b.WriteByte('@')
	}
	if h.Port != 0 {
		b.WriteString(net.JoinHostPort(h.Host, strconv.Itoa(h.Port)))
	} else if strings.Contains(h.Host, ":") {
		b.WriteString("[" + h.Host + "]")
	} else {
		b.WriteString(h.Host)
	}
	return b.String()
}

// parsePort parses a TCP port number 1..65535.
func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p <= 0 || p > 65535 || strings.TrimSpace(s) != s || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return p, nil
}

// parseHop parses one jump host: ssh://[user@]host[:port] or
// [user@]host[:port], where host may be a bracketed IPv6 address.
func parseHop(s string) (hop, error) {
	var h hop
	orig := s
	if s == "" {
		return h, errors.New("empty jump host")
	}
	if rest, ok := strings.CutPrefix(s, "ssh://"); ok {
		s = rest
		if strings.ContainsAny(s, "/?#") {
			// ssh allows only an optional trailing slash.
			s = strings.TrimSuffix(s, "/")
			if strings.ContainsAny(s, "/?#") {
				return h, fmt.Errorf("bad ssh:// URI %q", orig)
			}
		}
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			h.User, s = s[:i], s[i+1:]
			if h.User == "" || strings.Contains(h.User, ";") {
				return h, fmt.Errorf("bad user in %q", orig)
			}
		}
	} else if i := strings.LastIndexByte(s, '@'); i >= 0 {
		h.User, s = s[:i], s[i+1:]
		if h.User == "" {
			return h, fmt.Errorf("empty user in jump host %q", orig)
		}
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return h, fmt.Errorf("missing ']' in jump host %q", orig)
		}
		host, s = s[1:end], s[end+1:]
		if s != "" {
			if s[0] != ':' {
				return h, fmt.Errorf("bad jump host %q", orig)
			}
			port = s[1:]
			if port == "" {
				return h, fmt.Errorf("empty port in jump host %q", orig)
			}
		}
	} else if i := strings.IndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if port == "" {
			return h, fmt.Errorf("empty port in jump host %q", orig)
		}
	}
	if host == "" {
		return h, fmt.Errorf("empty host name in jump host %q", orig)
	}
	if strings.ContainsAny(host, " \t\r\n,@[]\x00") || strings.HasPrefix(host, "-") {
		return h, fmt.Errorf("bad host name in jump host %q", orig)
	}
	if strings.ContainsAny(h.User, " \t\r\n,\x00") || strings.HasPrefix(h.User, "-") {
		return h, fmt.Errorf("bad user name in jump host %q", orig)
	}
	h.Host = host
	if port != "" {
		p, err := parsePort(port)
		if err != nil {
			return h, fmt.Errorf("jump host %q: %v", orig, err)
		}
		h.Port = p
	}
	return h, nil
}

// parseJumpList parses a ProxyJump value or -J argument: "none" (returns
// nil, true) or a comma-separated list of hops, first hop first.
func parseJumpList(s string) (hops []hop, none bool, err error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "none") {
		return nil, true, nil
	}
	if s == "" {
		return nil, false, errors.New("empty ProxyJump")
	}
	for _, part := range strings.Split(s, ",") {
		h, err := parseHop(strings.TrimSpace(part))
		if err != nil {
			return nil, false, err
		}
		hops = append(hops, h)
	}
	return hops, false, nil
}

// parseDestination splits ssh's destination argument, [user@]host or
// ssh://[user@]host[:port], into its parts. A plain destination keeps any
// ':' in the host name, like ssh.
func parseDestination(s string) (userName, host string, port int, err error) {
	if strings.HasPrefix(s, "ssh://") {
		h, err := parseHop(s)
		if err != nil {
			return "", "", 0, err
		}
		return h.User, h.Host, h.Port, nil
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		userName, s = s[:i], s[i+1:]
		if userName == "" {
			return "", "", 0, errors.New("empty user name in destination")
		}
	}
	if s == "" {
		return "", "", 0, errors.New("empty host name")
	}
	if strings.HasPrefix(s, "-") || strings.ContainsAny(s, " \t\r\n\x00") {
		return "", "", 0, fmt.Errorf("bad host name %q", s)
	}
	return userName, s, 0, nil
}

// splitArgs splits a configuration value into words like ssh does for
// multi-word keywords: words are separated by white space; single or double
// quotes group (and are removed); a backslash escapes a quote, a backslash or
// white space; an unquoted '#' at the start of a word ends the line.
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && i+1 < len(s) && (s[i+1] == quote || s[i+1] == '\\') {
				i++
				cur.WriteByte(s[i])
			} else if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return out, nil
		case c == '"' || c == '\'':
			quote = c
			inWord = true
		case c == '\\' && i+1 < len(s) && strings.IndexByte("\\\"' \t", s[i+1]) >= 0:
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
