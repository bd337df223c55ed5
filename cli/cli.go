// Package cli is the toworker command line: run a shell command or a
// registered Go function on many hosts over SSH, copy files to and from
// them, with pdsh/clush-style host expressions, prefixed or grouped output,
// JSON lines, a summary and exit statuses that say what failed.
//
// The toworker command is this package's Main. A program that registers
// its own functions gets the same command line, with its functions
// callable by `call`, by calling Main from its main function:
//
//	var Resize = agent.Register("resize", resize)
//
//	func main() { cli.Main() }   // myfleet call -H web[1-4] resize '{"Width": 640}'
//
// The binary ships itself to the hosts as the agent, so the functions run
// there are the ones compiled in. See README.md in this directory for the
// command reference.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/internal/hostlist"
)

// Main runs the command line of os.Args and exits with its status. It
// first calls agent.ServeIfAgent, so that the program serves as the agent
// when toworker started it on a host. The first SIGINT (Ctrl-C) or
// SIGTERM cancels the running jobs (their remote processes are killed) and
// prints the summary; a second one exits at once with status 130.
func Main() {
	agent.ServeIfAgent()
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		cancel()
		<-sig
		os.Exit(ExitInterrupted)
	}()
	os.Exit(Run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// Run runs the command line args, where args[0] is the program name (as
// in os.Args), and returns the exit status (ExitOK, ExitFailed, ExitUsage,
// ExitUnreachable, ExitInterrupted). Cancelling ctx is Ctrl-C: running
// jobs are cancelled on their hosts, the summary is printed, and Run
// returns ExitInterrupted. Host output goes to stdout and stderr; stdin
// is read for -H - and for call's data "-".
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := "toworker"
	if len(args) > 0 && args[0] != "" {
		prog = filepath.Base(args[0])
		args = args[1:]
	}
	env := &cliEnv{prog: prog, stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	if len(args) == 0 {
		env.usage(stderr)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(rest) > 0 {
			if c := lookupCommand(rest[0]); c != nil {
				c.help(env, stdout)
				return ExitOK
			}
			fmt.Fprintf(stderr, "%s: no command %q\n", prog, rest[0])
			return ExitUsage
		}
		env.usage(stdout)
		return ExitOK
	case "-V", "--version":
		name = "version"
	}
	c := lookupCommand(name)
	if c == nil {
		fmt.Fprintf(stderr, "%s: no command %q; try %s --help\n", prog, name, prog)
		return ExitUsage
	}
	code, err := c.run(ctx, env, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help(env, stdout)
			return ExitOK
		}
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "%s %s: %v\n(see %s %s --help)\n", prog, c.name, err, prog, c.name)
			return ExitUsage
		}
		fmt.Fprintf(stderr, "%s %s: %v\n", prog, c.name, err)
		if code == ExitOK {
			code = ExitFailed
		}
	}
	return code
}

// cliEnv is what the commands run with.
type cliEnv struct {
	prog           string
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand.
type command struct {
	name     string
	args     string // synopsis after the flags
	short    string
	long     string // paragraphs after the synopsis; %[1]s is the program name
	examples string // %[1]s is the program name
	flags    func(*flagSet) any
	run      func(ctx context.Context, env *cliEnv, args []string) (int, error)
}

var commands []*command

func init() {
	commands = []*command{runCommand, callCommand, putCommand, getCommand, hostsCommand, funcsCommand, versionCommand}
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (env *cliEnv) usage(w io.Writer) {
	fmt.Fprintf(w, `%[1]s runs commands and Go functions on many hosts over SSH.

Usage:
  %[1]s COMMAND [flags] [arguments]

Commands:
`, env.prog)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, `
Run '%[1]s COMMAND --help' for a command's flags and examples.

Exit status: 0 every host succeeded; 1 the command or function failed on
some host; 2 usage error; 3 some host could not be reached or timed out
(wins over 1); 130 interrupted.
`, env.prog)
}

func (c *command) help(env *cliEnv, w io.Writer) {
	fmt.Fprintf(w, "Usage: %s %s [flags] %s\n\n", env.prog, c.name, c.args)
	io.WriteString(w, strings.ReplaceAll(strings.TrimSpace(c.long), "%[1]s", env.prog)+"\n\n")
	if c.flags != nil {
		fs := newFlagSet(c.name)
		c.flags(fs)
		fmt.Fprintln(w, "Flags:")
		fs.help(w)
		fmt.Fprintln(w)
	}
	if c.examples != "" {
		fmt.Fprintln(w, "Examples:")
		io.WriteString(w, strings.ReplaceAll(strings.TrimRight(c.examples, "\n"), "%[1]s", env.prog)+"\n")
	}
}

// ---- run ----

type runOpts struct {
	jobFlags
	env   strList
	stdin bool
}

// maxStdin bounds what run --stdin reads: it is sent to every host, and
// held once for each host at work (--fanout).
const maxStdin = 64 << 20

var runCommand = &command{
	name:  "run",
	args:  "[--] COMMAND [ARG...]",
	short: "run a shell command on every host",
	long: `Runs COMMAND on every host, in parallel, through the agent's built-in exec
function. The words are joined with spaces and run by /bin/sh -c, as ssh and
pdsh do, so quote for the remote shell (a command of plain words that names
a program, like "uptime", is run directly, as sh would). Flags end at the first word of the
command (or at --). Output lines arrive as "host: line", stdout on stdout and
stderr on stderr; the exit status, signal or timeout of each host is in the
summary on stderr. The command runs in the login directory unless -C is given,
with no stdin; with --stdin, this command's stdin is read to its end first
(at most 64 MiB) and every host's command gets all of it, as under clush or
pssh -I.`,
	examples: `  %[1]s run -H 'web[1-4],db1' -- uname -a
  %[1]s run -H web1 -H web2 -C /srv --timeout 30s -- 'ls | wc -l'
  %[1]s run -f hosts.txt -x web3 -b -- cat /etc/os-release
  %[1]s run -H 'web[01-40]' --batch 10 --max-fail 2 --failed-file failed.txt -- systemctl restart app
  %[1]s run -f failed.txt -- systemctl restart app        # retry exactly the hosts that failed
  %[1]s run -H 'db[1-3]' --json -- df -h / | jq -c 'select(.status? != null)'
  %[1]s run -H 'web[1-4]' --stdin -- bash -s < deploy.sh   # a local script, run on each host
`,
	flags: func(fs *flagSet) any {
		o := &runOpts{}
		o.jobFlags.register(fs, true)
		fs.list(&o.env, "KEY=VALUE", "set an environment variable for the command (repeatable)", "e", "env")
		fs.boolean(&o.stdin, "read stdin to its end (at most 64 MiB) and give it to the command on every host", "stdin")
		return o
	},
}

func init() {
	runCommand.run = func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("run")
		o := runCommand.flags(fs).(*runOpts)
		words, err := fs.parse(args, true)
		if err != nil {
			return ExitUsage, err
		}
		if len(words) == 0 {
			return ExitUsage, usagef("no command given")
		}
		for _, e := range o.env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				return ExitUsage, usagef("--env %q: want KEY=VALUE", e)
			}
		}
		t := &runTask{command: shellJoin(words), env: o.env, chdir: o.chdir}
		if o.stdin {
			if slices.Contains(o.hosts, "-") {
				return ExitUsage, usagef("--stdin and -H - both read stdin")
			}
			b, err := io.ReadAll(io.LimitReader(env.stdin, maxStdin+1))
			if err != nil {
				return ExitUsage, usagef("--stdin: %v", err)
			}
			if len(b) > maxStdin {
				return ExitUsage, usagef("--stdin: more than %d MiB on stdin; copy it to the hosts with put, then run", maxStdin>>20)
			}
			t.stdin = b
		}
		return runJobs(ctx, env, "run", &o.jobFlags, nil, func(*sink) (task, error) { return t, nil })
	}
}

// ---- call ----

var callCommand = &command{
	name:  "call",
	args:  "FUNC [DATA]",
	short: "call a registered Go function on every host",
	long: `Calls the function registered (with agent.Register) under the name FUNC in
this program, on every host, and prints its result as JSON: "host: RESULT" on
stdout, or in the "result" field of --json records. DATA is the function's
input as JSON: given inline, as - to read it from stdin, or as @FILE. It is
converted to CBOR and decoded on the host into the function's input type.
Object keys match struct field names (or their cbor tag names) exactly, or else
case-insensitively: {"path": "/etc"} fills a field Path. JSON integers fit
integer and float fields; numbers with a fraction or exponent only fit floats.
Structs with integer keys (cbor keyasint) or toarray cannot be written in JSON.
Without DATA the function gets its input type's zero value. Results: maps and
structs print as objects, []byte as base64.

The function runs in the agent's directory, /, unless -C is given. '%[1]s funcs'
lists the functions of this program.`,
	examples: `  %[1]s call -H web1 myapp.resize '{"Path": "/srv/img", "Width": 640}'
  %[1]s call -N -H web1 myapp.stats | jq .
  %[1]s call -f hosts.txt -b myapp.version
  echo '{"Shard": 3}' | %[1]s call -H 'worker[1-8]' myapp.process -
`,
	flags: func(fs *flagSet) any {
		o := &jobFlags{}
		o.register(fs, true)
		return o
	},
}

func init() {
	callCommand.run = func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("call")
		o := callCommand.flags(fs).(*jobFlags)
		pos, err := fs.parse(args, false)
		if err != nil {
			return ExitUsage, err
		}
		if len(pos) < 1 || len(pos) > 2 {
			return ExitUsage, usagef("want FUNC and at most one DATA argument, got %d arguments", len(pos))
		}
		t := &callTask{fn: pos[0], chdir: o.chdir}
		if len(pos) == 2 {
			raw, err := readData(pos[1], env.stdin)
			if err != nil {
				return ExitUsage, err
			}
			if t.data, err = jsonToCBOR(raw); err != nil {
				return ExitUsage, usagef("DATA: %v", err)
			}
		}
		return runJobs(ctx, env, "call", o, nil, func(s *sink) (task, error) { t.sink = s; return t, nil })
	}
}

// readData reads call's DATA argument.
func readData(arg string, stdin io.Reader) ([]byte, error) {
	switch {
	case arg == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 256<<20))
		if err != nil {
			return nil, usagef("read DATA from stdin: %v", err)
		}
		return b, nil
	case strings.HasPrefix(arg, "@"):
		b, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, usagef("DATA: %v", err)
		}
		return b, nil
	}
	return []byte(arg), nil
}

// ---- put / get ----

var putCommand = &command{
	name:  "put",
	args:  "LOCAL... REMOTE_DIR",
	short: "copy local files and directories to every host",
	long: `Copies each LOCAL file or directory (recursively) into REMOTE_DIR on every
host, as REMOTE_DIR/<name of LOCAL>, like pdcp -r and clush --copy. REMOTE_DIR
is created if missing; a relative REMOTE_DIR is relative to the login directory
(or -C). Modes (with set-id and sticky bits) and modification times are kept;
ownership is not. Symbolic links named as LOCAL are followed, links inside a
directory are copied as links; special files are skipped. Files are streamed in
1 MiB chunks and written under a temporary name, synced, then renamed: a
partial file never appears under its final name. Existing files are replaced.`,
	examples: `  %[1]s put -H 'web[1-4]' app.conf /etc/app/
  %[1]s put -f hosts.txt ./release-42 /srv/releases
`,
	flags: func(fs *flagSet) any {
		o := &jobFlags{}
		o.register(fs, true)
		var recursive bool
		fs.boolean(&recursive, "accepted for pdcp compatibility; directories are always copied recursively", "r")
		return o
	},
}

func init() {
	putCommand.run = func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("put")
		o := putCommand.flags(fs).(*jobFlags)
		pos, err := fs.parse(args, false)
		if err != nil {
			return ExitUsage, err
		}
		if len(pos) < 2 {
			return ExitUsage, usagef("want LOCAL... REMOTE_DIR")
		}
		return runJobs(ctx, env, "put", o, nil, func(s *sink) (task, error) {
			t, err := buildPut(pos[:len(pos)-1], s.note)
			if err != nil {
				return nil, err
			}
			t.dest, t.chdir = pos[len(pos)-1], o.chdir
			return t, nil
		})
	}
}

var getCommand = &command{
	name:  "get",
	args:  "REMOTE... LOCAL_DIR",
	short: "copy files and directories from every host",
	long: `Copies each REMOTE file or directory (recursively) from every host into
LOCAL_DIR/<host>/<name of REMOTE>, like rpdcp -r and clush --rcopy. LOCAL_DIR
and the host directories are created if missing. Modes (without set-id and
sticky bits) and modification times are kept. Files are streamed in 1 MiB
chunks and written under a temporary name, synced, then renamed.

Nothing a host sends can leave LOCAL_DIR/<host>: names that are absolute,
contain "..", or pass through a symbolic link are refused (the host then
counts as failed), and symbolic links whose target would point outside are
skipped with a warning.`,
	examples: `  %[1]s get -H 'web[1-4]' /var/log/app.log /etc/app ./collected
  # ./collected/web1/app.log, ./collected/web1/app/..., ./collected/web2/...
`,
	flags: func(fs *flagSet) any {
		o := &jobFlags{}
		o.register(fs, true)
		var recursive bool
		fs.boolean(&recursive, "accepted for rpdcp compatibility; directories are always copied recursively", "r")
		return o
	},
}

func init() {
	getCommand.run = func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("get")
		o := getCommand.flags(fs).(*jobFlags)
		pos, err := fs.parse(args, false)
		if err != nil {
			return ExitUsage, err
		}
		if len(pos) < 2 {
			return ExitUsage, usagef("want REMOTE... LOCAL_DIR")
		}
		local := pos[len(pos)-1]
		return runJobs(ctx, env, "get", o, nil, func(s *sink) (task, error) {
			if err := os.MkdirAll(local, getDirMode); err != nil {
				return nil, usagef("%v", err)
			}
			return &getTask{paths: pos[:len(pos)-1], localDir: local, chdir: o.chdir, sink: s}, nil
		})
	}
}

// runJobs is the common body of run, call, put and get.
func runJobs(ctx context.Context, env *cliEnv, name string, o *jobFlags, extraHosts []string, mk func(*sink) (task, error)) (int, error) {
	if err := o.check(); err != nil {
		return ExitUsage, err
	}
	hosts, err := o.resolve(extraHosts, env.stdin, env.getenv)
	if err != nil {
		return ExitUsage, err
	}
	if _, err := o.maxFailCount(len(hosts)); err != nil {
		return ExitUsage, err
	}
	mode := modeStream
	switch {
	case o.json:
		mode = modeJSON
	case o.group:
		mode = modeGroup
	}
	s := newSink(mode, o.noPrefix, hosts, env.stdout, env.stderr)
	t, err := mk(s)
	if err != nil {
		return ExitUsage, err
	}
	e := &engine{name: env.prog + " " + name, flags: o, hosts: hosts, task: t, sink: s,
		stderr: env.stderr, isTTY: isTerminal(env.stderr)}
	start := time.Now()
	outs, interrupted, err := e.run(ctx)
	if err != nil {
		return ExitFailed, err
	}
	s.flushGroups()
	e.summary(outs, time.Since(start), o.quiet)
	if o.failedFile != "" {
		if err := writeFailed(o.failedFile, outs); err != nil {
			s.note("%s: --failed-file: %v", e.name, err)
		}
	}
	return exitStatus(outs, interrupted), nil
}

// isTerminal reports whether w is a terminal. Tests replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalWidth returns the width of the terminal w, or 0.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil {
			return width
		}
	}
	return 0
}

// ---- hosts ----

var hostsCommand = &command{
	name:  "hosts",
	args:  "[EXPR...]",
	short: "print the hosts a host expression names",
	long: `Prints the hosts named by the expressions (given as arguments or with -H, -f,
-x, as for every command), one a line, in order and without duplicates. With
-c prints them folded back into one expression; with -n prints their number.

Expressions (pdsh/ClusterShell syntax): names separated by commas or spaces;
brackets hold numeric ranges and lists, zero padding kept: web[1-4],
web[01-10], web[1,3,5-7], node[1-10/2] (step), rack[1-2]-node[1-2].`,
	examples: `  %[1]s hosts 'web[1-4],db1'
  %[1]s hosts -H 'rack[1-4]-node[01-32]' -x 'rack2-*' -n
  %[1]s hosts -c web1 web2 web3 web7
`,
	flags: func(fs *flagSet) any {
		o := &hostsOpts{}
		o.hostFlags.register(fs)
		fs.boolean(&o.compress, "print one folded expression", "c", "compress")
		fs.boolean(&o.count, "print the number of hosts", "n", "count")
		return o
	},
}

type hostsOpts struct {
	hostFlags
	compress, count bool
}

func init() {
	hostsCommand.run = func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("hosts")
		o := hostsCommand.flags(fs).(*hostsOpts)
		pos, err := fs.parse(args, false)
		if err != nil {
			return ExitUsage, err
		}
		hosts, err := o.resolve(pos, env.stdin, env.getenv)
		if err != nil {
			return ExitUsage, err
		}
		switch {
		case o.count:
			fmt.Fprintln(env.stdout, len(hosts))
		case o.compress:
			fmt.Fprintln(env.stdout, hostlist.Compress(hosts))
		default:
			fmt.Fprintln(env.stdout, strings.Join(hosts, "\n"))
		}
		return ExitOK, nil
	}
}

// ---- funcs ----

var funcsCommand = &command{
	name:  "funcs",
	short: "list the functions this program can call",
	long: `Lists the functions registered in this program (and so in its agent), which
'%[1]s call' can run. Names starting with "toworker." are built in.`,
	run: func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("funcs")
		pos, err := fs.parse(args, false)
		if err != nil {
			return ExitUsage, err
		}
		if len(pos) > 0 {
			return ExitUsage, usagef("no arguments expected")
		}
		for _, n := range agent.Names() {
			fmt.Fprintln(env.stdout, n)
		}
		return ExitOK, nil
	},
}

// ---- version ----

var versionCommand = &command{
	name:  "version",
	short: "print the version, commit and Go version",
	long:  `Prints this program's module version, the VCS commit it was built from, and the Go version and platform.`,
	run: func(ctx context.Context, env *cliEnv, args []string) (int, error) {
		fs := newFlagSet("version")
		if _, err := fs.parse(args, false); err != nil {
			return ExitUsage, err
		}
		fmt.Fprint(env.stdout, versionText(env.prog))
		return ExitOK, nil
	},
}

// versionText describes the build.
func versionText(prog string) string {
	version, commit, when, dirty := "(unknown)", "(unknown)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", prog, version)
	fmt.Fprintf(&b, "commit %s", commit)
	if dirty {
		b.WriteString(" (modified)")
	}
	if when != "" {
		fmt.Fprintf(&b, " %s", when)
	}
	fmt.Fprintf(&b, "\n%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}
