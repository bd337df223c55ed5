package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/toworker/toworker/internal/hostlist"
	"github.com/toworker/toworker/remote"
)

// usageError is a command line the command cannot run: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// strList is a repeatable string flag.
type strList []string

func (l *strList) String() string     { return strings.Join(*l, ",") }
func (l *strList) Set(s string) error { *l = append(*l, s); return nil }

// flagDoc is one flag as the help shows it.
type flagDoc struct {
	names []string // without dashes; one letter is shown as -x, longer as --xx
	arg   string   // the value's placeholder; "" for a boolean flag
	usage string
}

// flagSet is a flag.FlagSet that remembers how to document its flags,
// with short and long names sharing one value.
type flagSet struct {
	fs   *flag.FlagSet
	docs []flagDoc
}

func newFlagSet(name string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{fs: fs}
}

func (f *flagSet) add(v flag.Value, arg, usage string, names ...string) {
	for _, n := range names {
		f.fs.Var(v, n, usage)
	}
	f.docs = append(f.docs, flagDoc{names: names, arg: arg, usage: usage})
}

func (f *flagSet) str(p *string, arg, usage string, names ...string) {
	f.add((*stringValue)(p), arg, usage, names...)
}

func (f *flagSet) boolean(p *bool, usage string, names ...string) {
	f.add((*boolValue)(p), "", usage, names...)
}

func (f *flagSet) integer(p *int, arg, usage string, names ...string) {
	f.add((*intValue)(p), arg, usage, names...)
}

func (f *flagSet) duration(p *time.Duration, arg, usage string, names ...string) {
	f.add((*durationValue)(p), arg, usage, names...)
}

func (f *flagSet) list(p *strList, arg, usage string, names ...string) {
	f.add(p, arg, usage, names...)
}

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type boolValue bool

func (v *boolValue) String() string { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("not a boolean")
	}
	*v = boolValue(b)
	return nil
}
func (v *boolValue) IsBoolFlag() bool { return true }

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return errors.New("not a non-negative integer")
	}
	*v = intValue(n)
	return nil
}

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		// A bare number is seconds, as in pdsh -u and clush -u.
		n, nerr := strconv.ParseFloat(s, 64)
		if nerr != nil {
			return errors.New("not a duration (like 30s, 5m or 1h30m)")
		}
		d = time.Duration(n * float64(time.Second))
	}
	if d < 0 {
		return errors.New("negative duration")
	}
	*v = durationValue(d)
	return nil
}

// help renders the flags for --help.
func (f *flagSet) help(w io.Writer) {
	type row struct{ left, usage string }
	var rows []row
	width := 0
	for _, d := range f.docs {
		var names []string
		for _, n := range d.names {
			if len(n) == 1 {
				names = append(names, "-"+n)
			} else {
				names = append(names, "--"+n)
			}
		}
		left := strings.Join(names, ", ")
		if d.arg != "" {
			left += " " + d.arg
		}
		if len(d.names[0]) > 1 {
			left = "    " + left // align long-only flags under the long names
		}
		rows = append(rows, row{left, d.usage})
		width = max(width, len(left))
	}
	width = min(width, 30)
	const lineWidth = 80
	for _, r := range rows {
		lines := wrap(r.usage, max(lineWidth-width-4, 30))
		if len(r.left) > width {
			fmt.Fprintf(w, "  %s\n", r.left)
		} else {
			fmt.Fprintf(w, "  %-*s  %s\n", width, r.left, lines[0])
			lines = lines[1:]
		}
		for _, l := range lines {
			fmt.Fprintf(w, "  %s  %s\n", strings.Repeat(" ", width), l)
		}
	}
}

// wrap breaks text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

// parse parses args, allowing flags among the positional arguments unless
// stopAtFirst (then the first positional argument and everything after it
// are positional, as for ssh and pdsh commands). "--" ends the flags.
func (f *flagSet) parse(args []string, stopAtFirst bool) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		rest := f.fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		if stopAtFirst {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// hostFlags select hosts: -H, -x, -f (and WCOLL, as pdsh).
type hostFlags struct {
	hosts, exclude, files strList
}

func (h *hostFlags) register(f *flagSet) {
	f.list(&h.hosts, "EXPR", "hosts, as a host expression such as web[1-4],db1 (repeatable; - reads expressions from stdin, one a line)", "H", "w", "hosts")
	f.list(&h.exclude, "EXPR", "leave out these hosts; an expression, and * ? globs (repeatable)", "x", "exclude")
	f.list(&h.files, "FILE", "read hosts from FILE, one host or expression a line, # comments (repeatable)", "f", "hostfile")
}

// resolve expands the host flags (plus extra expressions given as
// arguments) into host names.
func (h *hostFlags) resolve(extra []string, stdin io.Reader, getenv func(string) string) ([]string, error) {
	var include []string
	readStdin := false
	for _, e := range append(append([]string(nil), h.hosts...), extra...) {
		if e == "-" {
			if readStdin {
				continue
			}
			readStdin = true
			exprs, err := hostlist.ReadFile(stdin)
			if err != nil {
				return nil, hostErr("stdin", err)
			}
			include = append(include, exprs...)
			continue
		}
		include = append(include, e)
	}
	files := h.files
	if len(include) == 0 && len(files) == 0 {
		if w := getenv("WCOLL"); w != "" {
			files = strList{w}
		}
	}
	for _, name := range files {
		fh, err := os.Open(name)
		if err != nil {
			return nil, usagef("host file: %v", err)
		}
		exprs, err := hostlist.ReadFile(fh)
		fh.Close()
		if err != nil {
			return nil, hostErr(name, err)
		}
		include = append(include, exprs...)
	}
	if len(include) == 0 {
		return nil, usagef("no hosts: give -H EXPR, -f FILE or -H - (or set WCOLL)")
	}
	hosts, err := hostlist.ExpandAll(include, h.exclude)
	if err != nil {
		return nil, hostErr("", err)
	}
	if len(hosts) == 0 {
		return nil, usagef("no hosts left after --exclude")
	}
	return hosts, nil
}

// hostErr renders a host expression error with a caret under the bad
// character.
func hostErr(source string, err error) error {
	var he *hostlist.Error
	if !errors.As(err, &he) {
		return &usageError{msg: err.Error()}
	}
	msg := "bad host expression"
	if source != "" {
		msg += " in " + source
	}
	if he.Line > 0 {
		msg += fmt.Sprintf(" line %d", he.Line)
	}
	return &usageError{msg: fmt.Sprintf("%s: %s at column %d:\n  %s", msg, he.Msg, utf8Col(he), strings.ReplaceAll(he.Caret(), "\n", "\n  "))}
}

func utf8Col(e *hostlist.Error) int {
	pos := min(max(e.Pos, 0), len(e.Expr))
	return len([]rune(e.Expr[:pos])) + 1
}

// jobFlags are the flags of the commands that run jobs on hosts.
type jobFlags struct {
	hostFlags
	// ssh
	configFile string
	user       string
	port       int
	identities strList
	jump       string
	options    strList
	// agent
	agentBinary, agentDir, agentCache string
	agentPath, become                 string
	keepVersions                      int
	// running
	chdir          string
	fanout         int
	timeout        time.Duration
	connectTimeout time.Duration
	retries        int
	batch          int
	maxFail        string
	// output
	group, json, noPrefix, quiet, noProgress bool
	failedFile                               string
}

func (j *jobFlags) register(f *flagSet, withChdir bool) {
	j.hostFlags.register(f)
	if withChdir {
		f.str(&j.chdir, "DIR", "work in DIR on the host, an absolute path (default: the login directory; for call, /)", "C", "chdir")
	}
	f.integer(&j.fanout, "N", "at most N hosts at work at once (default 64)", "fanout")
	f.duration(&j.timeout, "DUR", "kill the job on a host after DUR, e.g. 30s (default: no limit)", "u", "timeout")
	f.duration(&j.connectTimeout, "DUR", "give up connecting to a host after DUR (default 30s)", "t", "connect-timeout")
	f.integer(&j.retries, "N", "retry a host up to N times after a connection failure (default 0)", "retries")
	f.integer(&j.batch, "N", "rolling: run hosts N at a time, in order, each batch after the previous one ends", "batch")
	f.str(&j.maxFail, "N|N%", "stop starting hosts once N hosts (or N% of them) failed", "max-fail")
	f.boolean(&j.group, "group identical output of hosts, like dshbak -c / clush -b", "b", "group")
	f.boolean(&j.json, "write JSON lines: output lines and a final record per host", "json")
	f.boolean(&j.noPrefix, "do not put \"host: \" before output lines", "N", "no-prefix")
	f.boolean(&j.quiet, "no summary when every host succeeded", "q", "quiet")
	f.boolean(&j.noProgress, "no progress line, even on a terminal", "no-progress")
	f.str(&j.failedFile, "FILE", "write the hosts that did not succeed to FILE, for -f FILE", "failed-file")
	f.str(&j.configFile, "FILE", "ssh: read this ssh_config instead of ~/.ssh/config and /etc/ssh/ssh_config", "F")
	f.str(&j.user, "USER", "ssh: log in as USER", "l")
	f.integer(&j.port, "PORT", "ssh: connect to PORT", "p")
	f.list(&j.identities, "FILE", "ssh: identity (private key) file (repeatable)", "i")
	f.str(&j.jump, "HOSTS", "ssh: connect through these jump hosts (ProxyJump)", "J")
	f.list(&j.options, "KEY=VALUE", "ssh: an ssh_config option, e.g. -o Port=2222 (repeatable)", "o")
	f.str(&j.agentBinary, "PATH", "agent binary for hosts of this machine's platform (default: this program)", "agent-binary")
	f.str(&j.agentDir, "DIR", "directory of agent-GOOS-GOARCH binaries for other platforms", "agent-dir")
	f.str(&j.agentCache, "DIR", "agent cache directory on the hosts (default ~/.cache/toworker)", "agent-cache")
	f.str(&j.agentPath, "PATH", "run the agent pre-installed at PATH on the hosts (checked against this program's hash) instead of uploading one", "agent-path")
	f.str(&j.become, "USER", "run the agent, and every job, as USER through sudo -n (or doas -n): a password prompt is an error, never a hang", "become")
	f.integer(&j.keepVersions, "N", "old agent versions to keep in each host's cache (default 3; -1 keeps all)", "keep-versions")
}

// maxFailCount returns how many failures stop the run, 0 for no limit.
func (j *jobFlags) maxFailCount(total int) (int, error) {
	s := strings.TrimSpace(j.maxFail)
	if s == "" {
		return 0, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 {
			return 0, usagef("--max-fail %s: want N or N%% with 0 <= N <= 100", s)
		}
		n := int(v*float64(total)/100 + 0.999999)
		return max(n, 1), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, usagef("--max-fail %s: want N or N%%", s)
	}
	return n, nil
}

// poolConfig maps the flags onto a remote.PoolConfig.
func (j *jobFlags) poolConfig() remote.PoolConfig {
	cfg := remote.PoolConfig{
		MaxPerHost:     1,
		MinWarm:        -1,
		StopWait:       -1, // the command exits next: the agents stop on the goodbye alone
		Timeout:        -1,
		Retries:        j.retries,
		ConnectTimeout: j.connectTimeout,
		Fanout:         j.fanoutOrDefault(),
		SSH: remote.SSHOptions{
			ConfigFile:    j.configFile,
			User:          j.user,
			Port:          j.port,
			IdentityFiles: j.identities,
			JumpHosts:     j.jump,
			Options:       j.options,
		},
		Agent: remote.AgentOptions{Binary: j.agentBinary, Dir: j.agentDir, CacheDir: j.agentCache,
			Path: j.agentPath, Become: j.become, KeepVersions: j.keepVersions},
	}
	if j.timeout > 0 {
		cfg.Timeout = j.timeout
	}
	return cfg
}

func (j *jobFlags) fanoutOrDefault() int {
	if j.fanout <= 0 {
		return 64
	}
	return j.fanout
}

func (j *jobFlags) check() error {
	if j.chdir != "" && !strings.HasPrefix(j.chdir, "/") {
		return usagef("-C %s: give an absolute path", j.chdir)
	}
	if j.group && j.json {
		return usagef("--group and --json do not go together")
	}
	for _, o := range j.options {
		if k, _, ok := strings.Cut(o, "="); !ok || strings.TrimSpace(k) == "" {
			if _, _, ok := strings.Cut(strings.TrimSpace(o), " "); !ok {
				return usagef("-o %q: want Key=Value", o)
			}
		}
	}
	return nil
}
