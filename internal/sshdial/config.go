package sshdial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// maxIncludeDepth is OpenSSH's READCONF_MAX_DEPTH.
const maxIncludeDepth = 16

// systemConfigFile is ssh's system-wide client configuration.
const systemConfigFile = "/etc/ssh/ssh_config"

type blockKind int

const (
	blockTop   blockKind = iota // lines before the first Host/Match of a file
	blockHost                   // a Host block
	blockMatch                  // a Match block
)

// block is one Host or Match block (or a file's leading lines). A block can
// span several chunks when an Include sits inside it.
type block struct {
	kind     blockKind
	file     string
	line     int
	patterns []string           // Host patterns
	libHost  bool               // decide Host matching with ssh_config's Host.Matches
	hostCfg  *ssh_config.Config // the Host line alone, decoded (libHost)
	criteria []matchCriterion   // Match criteria
	parent   *block             // the block holding the Include that read this file
}

// chunk is a run of keyword lines of one block, decoded by ssh_config. A
// chunk with a nil cfg marks where a block starts, so that every block is
// evaluated in file order (Match criteria depend on what came before).
type chunk struct {
	blk  *block
	cfg  *ssh_config.Config
	file string
	line int // line in file of the chunk's first line
}

// matchCriterion is one "Match" attribute.
type matchCriterion struct {
	attr   string // all, canonical, final, exec, host, originalhost, user, localuser
	arg    string
	negate bool
}

// configSet is the parsed configuration: chunks in file order.
type configSet struct {
	chunks    []chunk
	wantFinal bool // a "Match final" asks for a second pass
	readFiles []string
	homeDir   string
}

// loadConfig reads the files ssh would read for o.
func loadConfig(o *Options, home string) (*configSet, error) {
	cs := &configSet{homeDir: home}
	if o.ConfigFile != "" {
		path := expandTilde(o.ConfigFile, home)
		if err := cs.loadFile(path, true, nil, 0, true); err != nil {
			return nil, err
		}
		return cs, nil
	}
	if err := cs.loadFile(filepath.Join(home, ".ssh", "config"), true, nil, 0, false); err != nil {
		return nil, err
	}
	if err := cs.loadFile(systemConfigFile, false, nil, 0, false); err != nil {
		return nil, err
	}
	return cs, nil
}

// configLine splits a configuration line into its keyword (lower case) and
// the rest after the separator (white space and/or one '='). Blank lines and
// comments give "".
func configLine(line string) (keyword, rest string) {
	s := strings.TrimLeft(line, " \t")
	if s == "" || s[0] == '#' {
		return "", ""
	}
	i := strings.IndexAny(s, " \t=")
	if i < 0 {
		return strings.ToLower(s), ""
	}
	keyword, s = strings.ToLower(s[:i]), strings.TrimLeft(s[i:], " \t")
	if strings.HasPrefix(s, "=") {
		s = strings.TrimLeft(s[1:], " \t")
	}
	return keyword, strings.TrimRight(s, " \t\r")
}

// loadFile reads one configuration file. user tells whether it is a user
// file (relative Include paths are in ~/.ssh) or the system one
// (/etc/ssh). Its Include directives are handled here, not by ssh_config,
// so that ~ and relative paths follow Options.HomeDir (ssh_config resolves
// them against the password database's home directory and treats every
// Decoded file as a user file).
func (cs *configSet) loadFile(path string, user bool, parent *block, depth int, mustExist bool) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("ssh_config %s: Include nested too deeply (more than %d levels)", path, maxIncludeDepth)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !mustExist && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("ssh_config: %w", err)
	}
	cs.readFiles = append(cs.readFiles, path)
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")

	cur := &block{kind: blockTop, file: path, line: 1, parent: parent}
	cs.chunks = append(cs.chunks, chunk{blk: cur, file: path, line: 1})
	header := "" // text that starts each chunk of cur (a Host line)
	var buf strings.Builder
	bufLine, bufHasKV := 1, false

	flush := func() error {
		if bufHasKV {
			if err := cs.addChunk(cur, buf.String(), path, bufLine); err != nil {
				return err
			}
		}
		buf.Reset()
		bufHasKV = false
		return nil
	}
	start := func(lineNo int) {
		bufLine = lineNo
		if header != "" {
			buf.WriteString(header)
			buf.WriteByte('\n')
			bufLine = lineNo - 1
		}
	}
	start(1)
	for i, line := range lines {
		lineNo := i + 1
		kw, rest := configLine(line)
		switch kw {
		case "host":
			if err := flush(); err != nil {
				return err
			}
			pats, err := splitArgs(rest)
			if err != nil || len(pats) == 0 {
				return fmt.Errorf("ssh_config %s line %d: bad Host line %q", path, lineNo, line)
			}
			cur = &block{kind: blockHost, file: path, line: lineNo, patterns: pats, parent: parent}
			// ssh_config turns '?' into "zero or one character"; ssh means
			// exactly one. Such blocks are matched here instead.
			cur.libHost = !strings.Contains(rest, "?")
			header = ""
			if cur.libHost {
				header = "Host " + strings.Join(pats, " ")
				hc, err := ssh_config.Decode(strings.NewReader(header + "\n"))
				if err != nil {
					return fmt.Errorf("ssh_config %s line %d: %w", path, lineNo, err)
				}
				cur.hostCfg = hc
			}
			cs.chunks = append(cs.chunks, chunk{blk: cur, file: path, line: lineNo})
			start(lineNo + 1)
		case "match":
			if err := flush(); err != nil {
				return err
			}
			crit, err := parseMatch(rest)
			if err != nil {
				return fmt.Errorf("ssh_config %s line %d: %v", path, lineNo, err)
			}
			for _, c := range crit {
				if c.attr == "final" {
					cs.wantFinal = true
				}
			}
			cur = &block{kind: blockMatch, file: path, line: lineNo, criteria: crit, parent: parent}
			header = ""
			cs.chunks = append(cs.chunks, chunk{blk: cur, file: path, line: lineNo})
			start(lineNo + 1)
		case "include":
			if err := flush(); err != nil {
				return err
			}
			files, err := cs.includeFiles(rest, user, path, lineNo)
			if err != nil {
				return err
			}
			for _, f := range files {
				if err := cs.loadFile(f, user, cur, depth+1, false); err != nil {
					return err
				}
			}
			start(lineNo + 1)
		case "":
			buf.WriteString(line)
			buf.WriteByte('\n')
		default:
			buf.WriteString(line)
			buf.WriteByte('\n')
			bufHasKV = true
		}
	}
	return flush()
}

// addChunk decodes text with ssh_config.Decode.
func (cs *configSet) addChunk(b *block, text, file string, line int) error {
	cfg, err := ssh_config.Decode(strings.NewReader(text))
	if err != nil {
		// Decode again, padded, so that the error names the file's line.
		_, err2 := ssh_config.Decode(strings.NewReader(strings.Repeat("\n", line-1) + text))
		if err2 != nil {
			err = err2
		}
		return fmt.Errorf("ssh_config %s: %w", file, err)
	}
	cs.chunks = append(cs.chunks, chunk{blk: b, cfg: cfg, file: file, line: line})
	return nil
}

// includeFiles expands an Include line's globs like ssh: relative paths are
// taken from ~/.ssh in user files and from /etc/ssh in the system file, and
// each glob's matches are read in lexical order.
func (cs *configSet) includeFiles(rest string, user bool, file string, lineNo int) ([]string, error) {
	args, err := splitArgs(rest)
	if err != nil || len(args) == 0 {
		return nil, fmt.Errorf("ssh_config %s line %d: bad Include line", file, lineNo)
	}
	var out []string
	for _, a := range args {
		var pat string
		switch {
		case strings.HasPrefix(a, "~"):
			if !user {
				return nil, fmt.Errorf("ssh_config %s line %d: bad include path %s", file, lineNo, a)
			}
			pat = expandTilde(a, cs.homeDir)
		case filepath.IsAbs(a):
			pat = a
		case user:
			pat = filepath.Join(cs.homeDir, ".ssh", a)
		default:
			pat = filepath.Join("/etc/ssh", a)
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("ssh_config %s line %d: include %s: %v", file, lineNo, a, err)
		}
		sort.Strings(matches)
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.IsDir() {
				continue
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// parseMatch parses the criteria of a Match line.
func parseMatch(rest string) ([]matchCriterion, error) {
	words, err := splitArgs(rest)
	if err != nil {
		return nil, fmt.Errorf("bad Match line: %v", err)
	}
	if len(words) == 0 {
		return nil, errors.New("missing Match criteria")
	}
	var out []matchCriterion
	for i := 0; i < len(words); i++ {
		w := strings.ToLower(words[i])
		c := matchCriterion{}
		if strings.HasPrefix(w, "!") {
			c.negate = true
			w = w[1:]
		}
		c.attr = w
		switch w {
		case "all", "canonical", "final":
			if w == "all" && (c.negate || len(words) > 1 && !onlyCanonFinal(words)) {
				return nil, errors.New("'all' cannot be combined with other Match attributes")
			}
		case "exec", "host", "originalhost", "user", "localuser":
			if i+1 >= len(words) {
				return nil, fmt.Errorf("missing argument to Match %s", w)
			}
			i++
			c.arg = words[i]
		default:
			return nil, fmt.Errorf("unsupported Match attribute %s", words[i])
		}
		out = append(out, c)
	}
	return out, nil
}

func onlyCanonFinal(words []string) bool {
	for _, w := range words {
		switch strings.ToLower(w) {
		case "all", "canonical", "final":
		default:
			return false
		}
	}
	return true
}

// matchState is what Match criteria are evaluated against.
type matchState struct {
	host         string // host name so far (HostName substituted)
	originalHost string // the host as given
	user         string // remote user so far
	localUser    string
	final        bool
	// For Match exec: the port and HostKeyAlias so far, the local home
	// directory, where the command's stderr goes, and the context that
	// bounds it.
	port, keyAlias, home string
	stderr               io.Writer
	ctx                  context.Context
}

// evalMatch evaluates Match criteria like ssh: all must hold. Match exec
// runs its command (see matchExec) only while the criteria before it hold.
func evalMatch(b *block, st matchState) (bool, error) {
	result := true
	for _, c := range b.criteria {
		var r bool
		switch c.attr {
		case "all":
			r = true
		case "canonical", "final":
			r = st.final
		case "host":
			r = matchPatternList(st.host, c.arg, true)
		case "originalhost":
			r = matchPatternList(st.originalHost, c.arg, true)
		case "user":
			r = matchPatternList(st.user, c.arg, false)
		case "localuser":
			r = matchPatternList(st.localUser, c.arg, false)
		case "exec":
			if !result {
				continue // ssh skips exec once the line cannot match
			}
			var err error
			r, err = matchExec(c.arg, st)
			if err != nil {
				return false, fmt.Errorf("ssh_config %s line %d: Match exec %q: %w", b.file, b.line, c.arg, err)
			}
		}
		if r == c.negate {
			result = false
		}
	}
	return result, nil
}

// blockActive decides (once per pass: seen holds the blocks decided so
// far) whether b applies to alias. A configSet is shared by concurrent
// resolutions, so the decisions live in seen, not in the blocks.
func blockActive(b *block, alias string, st matchState, seen map[*block]bool) (bool, error) {
	if active, ok := seen[b]; ok {
		return active, nil
	}
	active := true
	if b.parent != nil {
		// Decided already: the parent's chunk comes first.
		active = seen[b.parent]
	}
	if active {
		switch b.kind {
		case blockHost:
			if b.libHost {
				h := b.hostCfg.Hosts[len(b.hostCfg.Hosts)-1]
				active = h.Matches(alias)
			} else {
				active = hostLineMatches(alias, b.patterns)
			}
		case blockMatch:
			var err error
			active, err = evalMatch(b, st)
			if err != nil {
				return false, err
			}
		}
	}
	seen[b] = active
	return active, nil
}

// settings collects keyword values like ssh: for most keywords the first
// value obtained wins; IdentityFile and CertificateFile accumulate.
type settings struct {
	single map[string]string
	multi  map[string][]string
	// proxy is "proxyjump" or "proxycommand": whichever came first.
	proxy string
}

func newSettings() *settings {
	return &settings{single: map[string]string{}, multi: map[string][]string{}}
}

// singleKeys are the single-valued keywords Resolve reads (lower case).
var singleKeys = []string{
	"hostname", "port", "user", "identitiesonly", "identityagent",
	"userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking",
	"hostkeyalias", "connecttimeout", "serveraliveinterval",
	"serveralivecountmax", "kexalgorithms", "ciphers", "macs",
	"hashknownhosts", "batchmode", "canonicalizehostname", "canonicaldomains",
	"canonicalizemaxdots", "canonicalizefallbacklocal", "bindaddress",
	"connectionattempts", "addressfamily", "setenv", "hostkeyalgorithms",
	"controlmaster", "controlpath",
}

// multiKeys are the keywords whose values accumulate.
var multiKeys = []string{"identityfile", "certificatefile", "sendenv"}

func (s *settings) set(key, value string) {
	key = strings.ToLower(key)
	switch key {
	case "identityfile", "certificatefile":
		for _, v := range s.multi[key] {
			if v == value {
				return // ssh ignores duplicates
			}
		}
		s.multi[key] = append(s.multi[key], value)
	case "sendenv":
		s.multi[key] = append(s.multi[key], value)
	case "proxyjump", "proxycommand":
		if s.proxy == "" {
			s.proxy = key
			s.single[key] = value
		}
	default:
		if _, ok := s.single[key]; !ok {
			s.single[key] = value
		}
	}
}

func (s *settings) get(key string) (string, bool) {
	v, ok := s.single[key]
	return v, ok
}

// apply reads the values of one active chunk with ssh_config's Get/GetAll.
func (s *settings) apply(c *chunk, alias string) error {
	wrap := func(err error) error {
		return fmt.Errorf("ssh_config %s line %d: %w", c.file, c.line, err)
	}
	for _, k := range singleKeys {
		if _, ok := s.single[k]; ok {
			continue
		}
		v, err := c.cfg.Get(alias, k)
		if err != nil {
			return wrap(err)
		}
		if v != "" {
			s.single[k] = v
		}
	}
	if _, ok := s.single["pubkeyacceptedalgorithms"]; !ok {
		// PubkeyAcceptedKeyTypes is its name before OpenSSH 8.5; in one
		// block, the first line of the two wins.
		v, err := c.cfg.Get(alias, "PubkeyAcceptedAlgorithms")
		if err != nil {
			return wrap(err)
		}
		old, err := c.cfg.Get(alias, "PubkeyAcceptedKeyTypes")
		if err != nil {
			return wrap(err)
		}
		if old != "" && (v == "" || firstKey(c.cfg, "pubkeyacceptedalgorithms", "pubkeyacceptedkeytypes") == "pubkeyacceptedkeytypes") {
			v = old
		}
		if v != "" {
			s.single["pubkeyacceptedalgorithms"] = v
		}
	}
	for _, k := range multiKeys {
		vs, err := c.cfg.GetAll(alias, k)
		if err != nil {
			return wrap(err)
		}
		for _, v := range vs {
			if v != "" {
				s.set(k, v)
			}
		}
	}
	if s.proxy == "" {
		jump, err := c.cfg.Get(alias, "ProxyJump")
		if err != nil {
			return wrap(err)
		}
		cmd, err := c.cfg.Get(alias, "ProxyCommand")
		if err != nil {
			return wrap(err)
		}
		switch {
		case jump != "" && cmd != "":
			// Both in one block: the first line wins, like ssh.
			if firstKey(c.cfg, "proxyjump", "proxycommand") == "proxyjump" {
				s.set("proxyjump", jump)
			} else {
				s.set("proxycommand", cmd)
			}
		case jump != "":
			s.set("proxyjump", jump)
		case cmd != "":
			s.set("proxycommand", cmd)
		}
	}
	return nil
}

// firstKey returns which of the keys a or b occurs first in cfg.
func firstKey(cfg *ssh_config.Config, a, b string) string {
	for _, h := range cfg.Hosts {
		for _, n := range h.Nodes {
			kv, ok := n.(*ssh_config.KV)
			if !ok {
				continue
			}
			switch strings.ToLower(kv.Key) {
			case a:
				return a
			case b:
				return b
			}
		}
	}
	return a
}

// matchExec runs a Match exec command as ssh does: its %C %L %d %h %k %l
// %n %p %r %u tokens expanded from what is known so far, through $SHELL
// (or /bin/sh) -c, with stdin and stdout on /dev/null and stderr where
// warnings go. It holds when the command exits with status 0. A command
// that cannot be started is an error, and so is one still running when
// the context ends (ssh would wait for it).
func matchExec(command string, st matchState) (bool, error) {
	lh, short := localHostNames()
	x := &expander{vars: map[byte]string{
		'C': connectionHash(lh, st.host, st.port, st.user),
		'L': short,
		'd': st.home,
		'h': st.host,
		'k': st.keyAlias,
		'l': lh,
		'n': st.originalHost,
		'p': st.port,
		'r': st.user,
		'u': st.localUser,
		'%': "%",
	}}
	cmdline, err := x.expand(command, false)
	if err != nil {
		return false, err
	}
	shell := os.Getenv("SHELL")
	if shell == "" {
		shell = "/bin/sh"
	}
	ctx := st.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	cmd := exec.CommandContext(ctx, shell, "-c", cmdline)
	cmd.Stderr = st.stderr
	ownGroup(cmd)
	// A process the command left behind may hold its stderr open: once
	// the command has been killed, do not wait for that.
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return false, fmt.Errorf("still running: %w", ctx.Err())
	case err == nil:
		return true, nil
	case errors.As(err, &ee):
		return false, nil
	}
	return false, err
}
