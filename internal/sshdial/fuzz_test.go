package sshdial

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseOption(f *testing.F) {
	for _, s := range []string{"Port=22", "Port 22", " User = \"a b\" ", "X", "=", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, v, err := parseOption(s)
		if err != nil {
			return
		}
		if k == "" || v == "" || strings.ContainsAny(k, " \t=") {
			t.Fatalf("parseOption(%q) = %q, %q", s, k, v)
		}
		// Parsing "key=value" again gives the same pair.
		k2, v2, err := parseOption(k + "=" + v)
		if strings.TrimSpace(v) != v || strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "=") {
			return // quotes, '=' and spaces kept inside quotes do not survive
		}
		if err != nil || k2 != k || v2 != v {
			t.Fatalf("round trip of %q: %q %q %v", s, k2, v2, err)
		}
	})
}

func FuzzParseJumpList(f *testing.F) {
	for _, s := range []string{"h", "u@h:22,h2", "[::1]:2", "ssh://u@h:3/", "none", "a,,b", "@h", "h:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hops, none, err := parseJumpList(s)
		if err != nil || none {
			return
		}
		if len(hops) == 0 {
			t.Fatalf("%q: no hops and no error", s)
		}
		for _, h := range hops {
			if h.Host == "" || h.Port < 0 || h.Port > 65535 {
				t.Fatalf("%q: bad hop %+v", s, h)
			}
			// A parsed hop renders to a spec that parses to itself.
			again, err := parseHop(h.String())
			if err != nil || again != h {
				t.Fatalf("%q: hop %+v renders as %q, which parses to %+v, %v", s, h, h.String(), again, err)
			}
		}
	})
}

func FuzzSplitArgs(f *testing.F) {
	for _, s := range []string{`a "b c" d`, `'x'`, `a\ b`, "a #c", `"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitArgs(s)
		if err != nil {
			return
		}
		if !strings.ContainsAny(s, `"'\#`) && isASCII(s) {
			if want := strings.Fields(s); strings.Join(words, "\x00") != strings.Join(want, "\x00") {
				t.Fatalf("splitArgs(%q) = %q, want %q", s, words, want)
			}
		}
	})
}

func FuzzParseSSHTime(f *testing.F) {
	for _, s := range []string{"30", "1m30s", "2W", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseSSHTime(s)
		if err == nil && d < 0 {
			t.Fatalf("parseSSHTime(%q) = %v", s, d)
		}
	})
}

func FuzzMatchGlob(f *testing.F) {
	f.Add("web1", "web?")
	f.Add("a.b.c", "*.c")
	f.Add("", "*?")
	f.Fuzz(func(t *testing.T, s, pat string) {
		if len(s) > 64 || len(pat) > 64 || !isASCII(s) || !isASCII(pat) {
			return
		}
		if got, want := matchGlob(s, pat), refMatch(s, pat); got != want {
			t.Fatalf("matchGlob(%q, %q) = %v, want %v", s, pat, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"~/x/%h", "%%d", "${HOME}", "%", "$"} {
		f.Add(s)
	}
	x := &expander{home: "/h", vars: map[byte]string{'h': "host", '%': "%"}}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := x.expand(s, true)
		if err == nil && !strings.ContainsAny(s, "%$") && out != s {
			t.Fatalf("expand(%q) = %q", s, out)
		}
	})
}

// FuzzConfig runs Resolve on arbitrary configuration files: it must not
// panic, and a resolved target must have a host name and a valid port.
// Match exec commands are run by $SHELL: /bin/false here, so that no
// command the fuzzer writes ever runs (a Match exec is then false).
func FuzzConfig(f *testing.F) {
	f.Setenv("SHELL", "/bin/false")
	for _, name := range []string{"basic.conf", "include.conf", "match.conf", "question.conf", "exec.conf"} {
		b, err := os.ReadFile(filepath.Join("testdata", "config", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b), "web-1")
	}
	f.Add("Host a\n Include x\n Port 2\nMatch all\n User u\n", "a")
	f.Fuzz(func(t *testing.T, config, alias string) {
		if strings.Contains(strings.ToLower(config), "include") {
			return // no reading of arbitrary files
		}
		dir := t.TempDir()
		p := filepath.Join(dir, "config")
		if err := os.WriteFile(p, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		// CanonicalizeHostname looks names up: never outside this process.
		noDNS := func(context.Context, string) ([]string, error) { return nil, errors.New("no lookups while fuzzing") }
		tg, err := Resolve(alias, Options{ConfigFile: p, HomeDir: dir, lookupHost: noDNS})
		if err != nil {
			return
		}
		if tg.Port <= 0 || tg.Port > 65535 {
			t.Fatalf("port %d", tg.Port)
		}
	})
}
