package sshdial

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseOption(t *testing.T) {
	for _, c := range []struct {
		in, key, value string
		ok             bool
	}{
		{"Port=22", "Port", "22", true},
		{"Port 22", "Port", "22", true},
		{"  Port  =  22  ", "Port", "22", true},
		{"Port\t22", "Port", "22", true},
		{"ProxyCommand=ssh -W %h:%p x", "ProxyCommand", "ssh -W %h:%p x", true},
		{`IdentityFile="/a b/c"`, "IdentityFile", "/a b/c", true},
		{"User==x", "User", "=x", true},
		{"Port", "", "", false},
		{"Port=", "", "", false},
		{"=22", "", "", false},
		{"", "", "", false},
	} {
		k, v, err := parseOption(c.in)
		if (err == nil) != c.ok || k != c.key || v != c.value {
			t.Errorf("parseOption(%q) = %q, %q, %v", c.in, k, v, err)
		}
	}
}

func TestParseJumpList(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []hop
		none bool
		ok   bool
	}{
		{"h1", []hop{{Host: "h1"}}, false, true},
		{"u@h1:2222,h2", []hop{{User: "u", Host: "h1", Port: 2222}, {Host: "h2"}}, false, true},
		{"a@b@h", []hop{{User: "a@b", Host: "h"}}, false, true},
		{"[::1]:22", []hop{{Host: "::1", Port: 22}}, false, true},
		{"u@[fe80::1]", []hop{{User: "u", Host: "fe80::1"}}, false, true},
		{"ssh://u@h:23", []hop{{User: "u", Host: "h", Port: 23}}, false, true},
		{"ssh://h/", []hop{{Host: "h"}}, false, true},
		{"none", nil, true, true},
		{"NONE", nil, true, true},
		{"", nil, false, false},
		{"h1,", nil, false, false},
		{"h:0", nil, false, false},
		{"h:99999", nil, false, false},
		{"h:", nil, false, false},
		{"@h", nil, false, false},
		{"[::1", nil, false, false},
		{"-oProxyCommand=x", nil, false, false},
		{"ssh://h/path", nil, false, false},
	} {
		got, none, err := parseJumpList(c.in)
		if (err == nil) != c.ok || none != c.none || (c.ok && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("parseJumpList(%q) = %+v, %v, %v", c.in, got, none, err)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{"a b\tc", []string{"a", "b", "c"}, true},
		{`"a b" c`, []string{"a b", "c"}, true},
		{`'a "b' c`, []string{`a "b`, "c"}, true},
		{`a\ b`, []string{"a b"}, true},
		{"a #comment", []string{"a"}, true},
		{"a#b", []string{"a#b"}, true},
		{`"unterminated`, nil, false},
		{"", nil, true},
	} {
		got, err := splitArgs(c.in)
		if (err == nil) != c.ok || (c.ok && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("splitArgs(%q) = %q, %v", c.in, got, err)
		}
	}
}

func TestParseSSHTime(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{"1m30s", 90 * time.Second, true},
		{"1h", time.Hour, true},
		{"2W", 14 * 24 * time.Hour, true},
		{"1x", 0, false},
		{"", 0, false},
		{"m", 0, false},
		{"-1", 0, false},
		{"99999999999", 0, false},
	} {
		got, err := parseSSHTime(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseSSHTime(%q) = %v, %v", c.in, got, err)
		}
	}
}

func TestMatchGlob(t *testing.T) {
	for _, c := range []struct {
		s, pat string
		want   bool
	}{
		{"web", "web?", false},
		{"web1", "web?", true},
		{"web12", "web?", false},
		{"a.example.com", "*.example.com", true},
		{"example.com", "*.example.com", false},
		{"", "*", true},
		{"abc", "a*c", true},
		{"abbbc", "a*b*c", true},
		{"ab", "a*b*c", false},
	} {
		if got := matchGlob(c.s, c.pat); got != c.want {
			t.Errorf("matchGlob(%q, %q) = %v", c.s, c.pat, got)
		}
	}
	if !matchPatternList("Host.Example.COM", "*.example.com,!bad.example.com", true) ||
		matchPatternList("bad.example.com", "*.example.com,!bad.example.com", true) ||
		matchPatternList("x", "!y", false) {
		t.Error("matchPatternList")
	}
}

func TestAlgorithmList(t *testing.T) {
	def := []string{"a", "b-1", "b-2", "c"}
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"x,y", []string{"x", "y"}},
		{"+x,a", []string{"a", "b-1", "b-2", "c", "x"}},
		{"-b-*", []string{"a", "c"}},
		{"^c,x", []string{"c", "x", "a", "b-1", "b-2"}},
	} {
		got, err := algorithmList(c.in, def)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("algorithmList(%q) = %q, %v", c.in, got, err)
		}
	}
	if got := supportedOnly([]string{"sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org"}, "kex"); !reflect.DeepEqual(got, []string{"curve25519-sha256", "curve25519-sha256@libssh.org"}) {
		t.Errorf("supportedOnly = %q", got)
	}
}

func TestExpand(t *testing.T) {
	t.Setenv("SSHDIAL_TEST_VAR", "val")
	x := &expander{home: "/home/u", vars: map[byte]string{'h': "host", 'd': "/home/u", '%': "%"}}
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"~/.ssh/id_%h", "/home/u/.ssh/id_host", true},
		{"%d/x%%y", "/home/u/x%y", true},
		{"${SSHDIAL_TEST_VAR}/k", "val/k", true},
		{"$HOME/k", "$HOME/k", true},
		{"%z", "", false},
		{"a%", "", false},
		{"${SSHDIAL_TEST_UNSET_VAR}", "", false},
		{"${", "", false},
	} {
		got, err := x.path(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("path(%q) = %q, %v", c.in, got, err)
		}
	}
}

// TestIncludeUsesHomeDir checks that relative and ~ Include paths follow
// Options.HomeDir (not $HOME or the password database, which is what
// ssh_config would use), nested Includes included, and that an Include
// loop is an error.
func TestIncludeUsesHomeDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", t.TempDir()) // a different, empty home
	ssh := filepath.Join(home, ".ssh")
	write := func(name, text string) string {
		p := filepath.Join(ssh, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("config", "Include ~/.ssh/a.conf\nHost *\n  User fallback\n")
	write("a.conf", "Host x\n  Include sub/*.conf\n  Port 7\n")
	write("sub/1.conf", "HostName one.example\n")
	write("sub/2.conf", "HostName two.example\nUser two\n")

	got, err := Resolve("x", Options{HomeDir: home})
	if err != nil {
		t.Fatal(err)
	}
	if got.HostName != "one.example" || got.User != "two" || got.Port != 7 {
		t.Errorf("got %s@%s:%d, want two@one.example:7", got.User, got.HostName, got.Port)
	}
	got, err = Resolve("y", Options{HomeDir: home})
	if err != nil {
		t.Fatal(err)
	}
	if got.HostName != "y" || got.User != "fallback" || got.Port != 22 {
		t.Errorf("got %s@%s:%d, want fallback@y:22", got.User, got.HostName, got.Port)
	}

	loop := write("loop.conf", "Include loop.conf\n")
	if _, err := Resolve("x", Options{HomeDir: home, ConfigFile: loop}); err == nil || !strings.Contains(err.Error(), "Include") {
		t.Errorf("Include loop: %v", err)
	}
}

func TestResolveErrors(t *testing.T) {
	home := t.TempDir()
	cfg := filepath.Join(home, "cfg")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		config, alias string
		opts          Options
		errText       string // "" = must succeed
	}{
		{"Host x\n Port 99999\n", "x", Options{}, "Port"},
		{"Host x\n IdentityFile ~/%z\n", "x", Options{}, "unknown key %z"},
		{"Match host x exec true\n Port 1\n", "x", Options{}, ""},
		{"Match host y exec true\n Port 1\n", "x", Options{}, ""},
		{"Match exec \"test %z\"\n Port 1\n", "x", Options{}, "unknown key %z"},
		{"Match user\n", "x", Options{}, "missing argument"},
		{"Match bogus x\n", "x", Options{}, "unsupported Match attribute"},
		{"Host x\n StrictHostKeyChecking maybe\n", "x", Options{}, "StrictHostKeyChecking"},
		{"Host x\n ServerAliveInterval 1y\n", "x", Options{}, "serveraliveinterval"},
		{"", "x", Options{Options: []string{"Host=y"}}, "not supported as a command-line option"},
		{"", "x", Options{JumpHosts: "a,,b"}, "-J"},
		{"", "x", Options{JumpHosts: "a", Options: []string{"ProxyCommand=nc"}}, "-J"},
		{"", "@x", Options{}, "empty user"},
		{"", "x", Options{Port: 70000}, "bad port"},
	} {
		write(c.config)
		o := c.opts
		o.ConfigFile, o.HomeDir = cfg, home
		_, err := Resolve(c.alias, o)
		switch {
		case c.errText == "" && err != nil:
			t.Errorf("%q: %v", c.config, err)
		case c.errText != "" && (err == nil || !strings.Contains(err.Error(), c.errText)):
			t.Errorf("%q %+v: error %v, want one containing %q", c.config, c.opts, err, c.errText)
		}
	}
	if _, err := Resolve("x", Options{ConfigFile: filepath.Join(home, "missing"), HomeDir: home}); err == nil {
		t.Error("a missing -F file must be an error")
	}
}

func TestDialUnsupportedKex(t *testing.T) {
	tg := &Target{Alias: "x", HostName: "127.0.0.1", Port: 1, KexAlgorithms: []string{"sntrup761x25519-sha512@openssh.com"}}
	_, err := Dial(context.Background(), tg, Options{HomeDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "KexAlgorithms") {
		t.Fatalf("got %v", err)
	}
}

// refMatch is a regexp-based reference for matchGlob.
func refMatch(s, pat string) bool {
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for _, r := range pat {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String()).MatchString(s)
}

// TestMatchExecRuns: a Match exec command runs only while the criteria
// before it hold (as in ssh), writes its stderr where warnings go, and is
// killed, failing the resolution, when the context ends.
func TestMatchExecRuns(t *testing.T) {
	home := t.TempDir()
	cfg := filepath.Join(home, "cfg")
	mark := func(name string) string { return filepath.Join(home, name) }
	config := "Match host other exec \"touch " + mark("host-failed") + "\"\n Port 1\n" +
		"Match host x exec false exec \"touch " + mark("exec-failed") + "\"\n Port 2\n" +
		"Match host x exec \"touch " + mark("ran") + "; echo said %h >&2\"\n Port 3\n" +
		"Match host slow exec \"sleep 30; true\"\n Port 4\n"
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var warn strings.Builder
	tg, err := Resolve("x", Options{ConfigFile: cfg, HomeDir: home, Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Port != 3 {
		t.Errorf("port %d, want 3 from the block whose command succeeded", tg.Port)
	}
	for name, want := range map[string]bool{"host-failed": false, "exec-failed": false, "ran": true} {
		if _, err := os.Stat(mark(name)); (err == nil) != want {
			t.Errorf("%s: command ran %v, want %v", name, err == nil, want)
		}
	}
	if warn.String() != "said x\n" {
		t.Errorf("the command's stderr went elsewhere: Warn got %q", warn.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = ResolveContext(ctx, "slow", Options{ConfigFile: cfg, HomeDir: home})
	if err == nil || !strings.Contains(err.Error(), "Match exec") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a Match exec command past the context's end: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the resolution took %v after its context ended", d)
	}
}
