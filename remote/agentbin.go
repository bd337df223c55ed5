package remote

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// AgentOptions choose the agent binary put on hosts. The zero value ships the
// master's own executable (which must call agent.ServeIfAgent first thing in
// main) to hosts of the master's platform.
type AgentOptions struct {
	// Binary is the agent for hosts of the master's own OS and
	// architecture. Empty means the running executable.
	Binary string
	// Dir holds agents for other platforms, named agent-GOOS-GOARCH (as
	// `make agents` builds them). Empty means none.
	Dir string
	// CacheDir is the directory on the host that holds cached agents, an
	// absolute path. Empty means ${XDG_CACHE_HOME:-$HOME/.cache}/toworker.
	CacheDir string
}

// platform is a GOOS/GOARCH pair and how uname -sm names it.
type platform struct{ goos, goarch string }

func (p platform) String() string { return p.goos + "/" + p.goarch }

// unamePlatforms maps `uname -sm` output to Go platforms.
var unamePlatforms = map[string]platform{
	"Linux x86_64":    {"linux", "amd64"},
	"Linux aarch64":   {"linux", "arm64"},
	"Linux arm64":     {"linux", "arm64"},
	"Darwin x86_64":   {"darwin", "amd64"},
	"Darwin arm64":    {"darwin", "arm64"},
	"FreeBSD amd64":   {"freebsd", "amd64"},
	"FreeBSD arm64":   {"freebsd", "arm64"},
	"FreeBSD aarch64": {"freebsd", "arm64"},
}

// agentBinary is one agent file, hashed and compressed once per process.
type agentBinary struct {
	path string
	plat platform

	once sync.Once
	hash string // hex SHA-256 of the uncompressed binary
	gz   []byte // gzip of the binary, as uploaded
	err  error
}

func (b *agentBinary) load() error {
	b.once.Do(func() {
		raw, err := os.ReadFile(b.path)
		if err != nil {
			b.err = fmt.Errorf("read agent binary: %w", err)
			return
		}
		sum := sha256.Sum256(raw)
		b.hash = hex.EncodeToString(sum[:])
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(raw)
		zw.Close()
		b.gz = buf.Bytes()
	})
	return b.err
}

// agentSet is the agents available for one AgentOptions.
type agentSet struct {
	opts   AgentOptions
	byPlat map[platform]*agentBinary
	self   *agentBinary
}

var agentSets struct {
	mu   sync.Mutex
	sets map[AgentOptions]*agentSet
}

// agentsFor returns the (process-wide, cached) agent set for opts.
func agentsFor(opts AgentOptions) (*agentSet, error) {
	agentSets.mu.Lock()
	defer agentSets.mu.Unlock()
	if s, ok := agentSets.sets[opts]; ok {
		return s, nil
	}
	if opts.CacheDir != "" {
		if !filepath.IsAbs(opts.CacheDir) {
			return nil, fmt.Errorf("remote: agent cache directory %q is not an absolute path", opts.CacheDir)
		}
		if strings.ContainsAny(opts.CacheDir, "'\"\\!$`\n\r") {
			return nil, fmt.Errorf("remote: agent cache directory %q contains a character the bootstrap cannot quote for every login shell (' \" \\ ! $ ` or a newline)", opts.CacheDir)
		}
	}
	s := &agentSet{opts: opts, byPlat: make(map[platform]*agentBinary)}
	self := opts.Binary
	if self == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("remote: cannot find the master's own executable to ship as the agent (%v); set AgentOptions.Binary (toworker --agent-binary) to an agent built for the hosts", err)
		}
		self = exe
	}
	if _, err := os.Stat(self); err != nil {
		return nil, fmt.Errorf("remote: cannot read the agent binary to ship (%v); set AgentOptions.Binary (toworker --agent-binary) to an agent built for the hosts", err)
	}
	here := platform{runtime.GOOS, runtime.GOARCH}
	s.self = &agentBinary{path: self, plat: here}
	s.byPlat[here] = s.self
	if opts.Dir != "" {
		ents, err := os.ReadDir(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("remote: agent directory: %w", err)
		}
		for _, e := range ents {
			name, ok := strings.CutPrefix(e.Name(), "agent-")
			if !ok {
				continue
			}
			goos, goarch, ok := strings.Cut(name, "-")
			if !ok {
				continue
			}
			p := platform{goos, goarch}
			if p == here && opts.Binary == "" {
				// An explicit per-platform agent beats shipping the master.
				s.self = &agentBinary{path: filepath.Join(opts.Dir, e.Name()), plat: p}
				s.byPlat[p] = s.self
				continue
			}
			if _, taken := s.byPlat[p]; !taken {
				s.byPlat[p] = &agentBinary{path: filepath.Join(opts.Dir, e.Name()), plat: p}
			}
		}
	}
	if agentSets.sets == nil {
		agentSets.sets = make(map[AgentOptions]*agentSet)
	}
	agentSets.sets[opts] = s
	return s, nil
}

// forUname returns the agent for a host whose `uname -sm` printed u.
func (s *agentSet) forUname(u string) (*agentBinary, error) {
	p, known := unamePlatforms[strings.TrimSpace(u)]
	if b := s.byPlat[p]; known && b != nil {
		return b, b.load()
	}
	var have []string
	for p := range s.byPlat {
		have = append(have, p.String())
	}
	sort.Strings(have)
	what := fmt.Sprintf("platform %q", u)
	if known {
		what = fmt.Sprintf("platform %s (uname %q)", p, u)
	}
	return nil, fmt.Errorf("no agent binary for %s; available: %s (build more with `make agents` and set AgentOptions.Dir)", what, strings.Join(have, ", "))
}

// script returns the one-line POSIX sh bootstrap. It must mean the same when
// the login shell that sshd runs it through is sh, bash, zsh, tcsh or fish,
// so it contains no single quote, backslash, exclamation mark or newline,
// and it is wrapped in single quotes for /bin/sh.
//
// Protocol on the session: the master first writes a line
// "toworker-master <version> <n>" and n bytes of frames. If the cached agent
// is present, owned by the user, not a symlink, and its SHA-256 matches, the
// script execs it (the agent reads the frames). Otherwise it discards the n
// bytes, prints "toworker-need <uname -sm>", reads "<size> <sha256>" and
// size bytes of gzip, writes them to a temporary file created with O_EXCL
// (set -C) in the 0700 cache directory, verifies the hash, renames it to its
// hash and execs it; the master then writes its preamble and frames again.
func (s *agentSet) script() (string, error) {
	var cases strings.Builder
	for u, p := range unamePlatforms {
		b := s.byPlat[p]
		if b == nil || (b != s.self && b.hash == "") {
			continue // other platforms' hashes are learnt when first needed
		}
		if err := b.load(); err != nil {
			return "", err
		}
		fmt.Fprintf(&cases, "%q) h=%s;; ", u, b.hash)
	}
	cache := `"${XDG_CACHE_HOME:-}"; case "$c" in /*) ;; *) c="$HOME/.cache";; esac; d="$c/toworker"`
	if s.opts.CacheDir != "" {
		cache = fmt.Sprintf(`""; d=%q`, s.opts.CacheDir)
	}
	sum := `( (sha256sum "$1" || shasum -a 256 "$1" || sha256 -r "$1") 2>/dev/null )`
	parts := []string{
		`umask 077`,
		`read -r l || exit 101`,
		`set -- $l`,
		`n=$3`,
		`c=` + cache,
		`k() { v=$` + sum + `; [ "${v%% *}" = "$2" ]; }`,
		`p="$(uname -sm)"`,
		`case "$p" in ` + cases.String() + `*) h=none;; esac`,
		`a="$d/$h"`,
		`if [ -f "$a" ] && [ -O "$a" ] && [ -O "$d" ]; then [ -L "$a" ] || [ -L "$d" ] || { k "$a" "$h" && exec "$a" --toworker-agent boss; }; fi`,
		`head -c "$n" >/dev/null`,
		`echo "toworker-need $p"`,
		`read -r z h || exit 102`,
		`[ "$z" = none ] && exit 103`,
		`mkdir -p "$d" && chmod 700 "$d" && [ -O "$d" ] && [ -d "$d" ] || { echo "toworker-fail cannot use the agent cache directory $d"; exit 104; }`,
		`[ -L "$d" ] && { echo "toworker-fail the agent cache directory $d is a symlink"; exit 104; }`,
		`t="$d/.tmp.$$"`,
		`rm -f "$t"`,
		`set -C`,
		`head -c "$z" | gzip -dc > "$t" && set +C && chmod 700 "$t" && k "$t" "$h" && mv -f "$t" "$d/$h" && exec "$d/$h" --toworker-agent boss`,
		`rm -f "$t"`,
		`echo "toworker-fail could not write, verify or run the agent in $d"`,
		`exit 105`,
	}
	return strings.Join(parts, "; "), nil
}

// command is the exec request sent to sshd.
func (s *agentSet) command() (string, error) {
	sc, err := s.script()
	if err != nil {
		return "", err
	}
	return "exec /bin/sh -c '" + sc + "'", nil
}
