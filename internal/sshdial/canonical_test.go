package sshdial

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// canonConfig is the configuration of the CanonicalizeHostname tests; what
// ssh 9.2 does with it (seen in `ssh -v`, with /etc/hosts holding the
// names of canonNames) is in TestCanonicalizeHostname's table.
const canonConfig = `CanonicalizeHostname yes
CanonicalDomains nope.example corp.example prod.example
Host *.corp.example
  User corpuser
  Port 2222
Match canonical host db.*
  User dbuser
Host short
  HostName web1
Host viaproxy
  HostName web1
  ProxyJump nobody@127.0.0.9
`

// canonNames are the names that resolve, as ssh asks for them (absolute).
var canonNames = []string{"web1.corp.example.", "db.prod.example.", "x.y.corp.example."}

func TestCanonicalizeHostname(t *testing.T) {
	home := t.TempDir()
	var asked []string
	lookup := func(ctx context.Context, name string) ([]string, error) {
		asked = append(asked, name)
		if slices.Contains(canonNames, name) || slices.Contains(canonNames, name+".") {
			return []string{"127.0.0.5"}, nil
		}
		return nil, errors.New("no such host")
	}
	for _, tt := range []struct {
		alias, extra   string
		host, user     string
		port           int
		asked, errText string // asked: the names looked up, space-separated
	}{
		{alias: "web1", host: "web1.corp.example", user: "corpuser", port: 2222, asked: "web1.nope.example. web1.corp.example."},
		{alias: "WEB1", host: "web1.corp.example", user: "corpuser", port: 2222, asked: "web1.nope.example. web1.corp.example."},
		{alias: "db", host: "db.prod.example", user: "dbuser", port: 22, asked: "db.nope.example. db.corp.example. db.prod.example."},
		// One dot is not more than CanonicalizeMaxDots (1): tried, and
		// the final pass runs ("Match canonical" holds) all the same.
		{alias: "db.prod", host: "db.prod", user: "dbuser", port: 22, asked: "db.prod.nope.example. db.prod.corp.example. db.prod.prod.example."},
		{alias: "x.y", host: "x.y.corp.example", user: "corpuser", port: 2222, asked: "x.y.nope.example. x.y.corp.example."},
		{alias: "a.b.c", host: "a.b.c", user: "root", port: 22},
		{alias: "web1.corp.example.", host: "web1.corp.example", user: "corpuser", port: 2222, asked: "web1.corp.example."},
		{alias: "short", host: "web1.corp.example", user: "corpuser", port: 2222, asked: "web1.nope.example. web1.corp.example."},
		{alias: "viaproxy", host: "web1", user: "root", port: 22},
		{alias: "127.0.0.9", host: "127.0.0.9", user: "root", port: 22},
		{alias: "x.y", extra: "CanonicalizeMaxDots 0\n", host: "x.y", user: "root", port: 22},
		{alias: "viaproxy", extra: "CanonicalizeHostname always\n", host: "web1.corp.example", user: "corpuser", port: 2222, asked: "web1.nope.example. web1.corp.example."},
		{alias: "nothere", extra: "CanonicalizeFallbackLocal no\n", errText: `could not resolve host "nothere"`,
			asked: "nothere.nope.example. nothere.corp.example. nothere.prod.example."},
		{alias: "web1", extra: "CanonicalizeHostname no\n", host: "web1", user: "root", port: 22},
		{alias: "web1", extra: "CanonicalizeHostname maybe\n", errText: "CanonicalizeHostname"},
	} {
		t.Run(tt.alias+"/"+strings.TrimSpace(tt.extra), func(t *testing.T) {
			cfg := filepath.Join(home, "cfg")
			if err := os.WriteFile(cfg, []byte(tt.extra+canonConfig), 0o600); err != nil {
				t.Fatal(err)
			}
			asked = nil
			tg, err := ResolveContext(context.Background(), tt.alias, Options{ConfigFile: cfg, HomeDir: home, User: "", lookupHost: lookup})
			if got := strings.Join(asked, " "); got != tt.asked {
				t.Errorf("looked up %q, want %q", got, tt.asked)
			}
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want one saying %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			user := tt.user
			if user == "root" {
				user = localUser()
			}
			if tg.HostName != tt.host || tg.User != user || tg.Port != tt.port {
				t.Errorf("got %s@%s:%d, want %s@%s:%d", tg.User, tg.HostName, tg.Port, user, tt.host, tt.port)
			}
		})
	}
}

// TestCanonicalizeLikeOpenSSH resolves canonConfig's hosts against a real
// resolver and compares the host name and port with those OpenSSH's ssh
// connects to (its "Connecting to" line), in a mount namespace whose
// /etc/hosts holds canonNames: the test binary runs itself there.
func TestCanonicalizeLikeOpenSSH(t *testing.T) {
	if os.Getenv("SSHDIAL_CANON_CHILD") != "" {
		canonChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts an /etc/hosts of its own in a mount namespace")
	}
	for _, tool := range []string{"ssh", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n")
	for i, n := range canonNames {
		// Both forms: glibc's files backend does not match "name." to
		// "name", as DNS would.
		fmt.Fprintf(&b, "127.0.0.%d %s %s\n", i+5, strings.TrimSuffix(n, "."), n)
	}
	if err := os.WriteFile(hosts, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "cfg")
	if err := os.WriteFile(cfg, []byte(canonConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /etc/hosts && exec "$@"`, hosts,
		os.Args[0], "-test.run", "^TestCanonicalizeLikeOpenSSH$", "-test.v")
	cmd.Env = append(os.Environ(), "SSHDIAL_CANON_CHILD="+cfg)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// canonChild is TestCanonicalizeLikeOpenSSH in its namespace.
func canonChild(t *testing.T) {
	cfg := os.Getenv("SSHDIAL_CANON_CHILD")
	if out, err := exec.Command("getent", "hosts", "web1.corp.example").Output(); err != nil || !strings.HasPrefix(string(out), "127.0.0.5") {
		t.Fatalf("the namespace's /etc/hosts is not in use: %q %v", out, err)
	}
	connecting := regexp.MustCompile(`Connecting to (\S+) \[[^]]*\] port (\d+)`)
	for _, alias := range []string{"web1", "db", "db.prod", "x.y", "x", "web1.corp.example.", "short", "127.0.0.9"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, _ := exec.CommandContext(ctx, "ssh", "-v", "-F", cfg, "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", alias, "true").CombinedOutput()
		tg, err := ResolveContext(ctx, alias, Options{ConfigFile: cfg, HomeDir: t.TempDir()})
		cancel()
		m := connecting.FindStringSubmatch(string(out))
		t.Logf("%s: ssh %q; Resolve %v %v", alias, m, tg, err)
		switch {
		case m == nil:
			// ssh could not resolve the name it settled on: neither can
			// the dialler, but the names must agree.
			if err != nil || !strings.Contains(string(out), "Could not resolve hostname "+tg.HostName+":") {
				t.Errorf("%s: ssh did not connect (%s), Resolve gives %v (%v)", alias, lastLine(out), tg, err)
			}
		case err != nil:
			t.Errorf("%s: %v; ssh connects to %s port %s", alias, err, m[1], m[2])
		case tg.HostName != m[1] || strconv.Itoa(tg.Port) != m[2]:
			t.Errorf("%s: Resolve gives %s port %d, ssh connects to %s port %s", alias, tg.HostName, tg.Port, m[1], m[2])
		}
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
