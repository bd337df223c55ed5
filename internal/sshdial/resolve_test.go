package sshdial

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sshG runs OpenSSH's `ssh -G` and returns its settings: keyword -> values
// (one per output line, in order).
func sshG(t *testing.T, home string, args ...string) map[string][]string {
	t.Helper()
	cmd := exec.Command("ssh", append([]string{"-G"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Stdin = nil
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("ssh -G %v: %v\n%s", args, err, stderr)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok {
			m[k] = append(m[k], v)
		}
	}
	return m
}

// copyTree copies testdata/home into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResolveMatchesOpenSSH resolves aliases from fixture configs and
// compares the result, field by field, with what OpenSSH's `ssh -G -F file
// [flags] alias` prints on this machine.
func TestResolveMatchesOpenSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("OpenSSH ssh not installed")
	}
	home := t.TempDir()
	copyTree(t, "testdata/home", home)
	t.Setenv("HOME", home)
	// Files given with -i must exist for ssh -G to list them.
	id1 := filepath.Join(home, "cli_id1")
	id2 := filepath.Join(home, "cli id2")
	for _, f := range []string{id1, id2} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// ssh -G expands ~ in UserKnownHostsFile (and IdentityAgent) from the
	// password database, not $HOME; map that home to ours to compare.
	pwHome := ""
	if u, err := user.Current(); err == nil {
		pwHome = u.HomeDir
	}
	localU := localUser()

	type tc struct {
		file  string
		alias string
		opts  Options
	}
	cases := []tc{
		{"basic.conf", "bastion", Options{}},
		{"basic.conf", "web-1", Options{}},
		{"basic.conf", "web-special", Options{}},
		{"basic.conf", "WEB-1", Options{}},
		{"basic.conf", "direct", Options{}},
		{"basic.conf", "timed", Options{}},
		{"basic.conf", "kex-minus", Options{}},
		{"basic.conf", "kex-plus", Options{}},
		{"basic.conf", "kex-caret", Options{}},
		{"basic.conf", "kex-set", Options{}},
		{"basic.conf", "hka-set", Options{}},
		{"basic.conf", "hka-minus", Options{}},
		{"basic.conf", "pka-minus", Options{}},
		{"basic.conf", "pka-oldname", Options{}},
		{"basic.conf", "pka-both", Options{}},
		{"basic.conf", "pka-both", Options{Options: []string{"PubkeyAcceptedKeyTypes=ecdsa-sha2-nistp256"}}},
		{"basic.conf", "someone@web-2", Options{}},
		{"basic.conf", "ssh://u2@web-3:2345", Options{}},
		{"basic.conf", "web-1", Options{User: "cliuser", Port: 9999}},
		{"basic.conf", "web-1", Options{Options: []string{"User=ouser", "Port 1234", "HostName=o.example", "StrictHostKeyChecking no"}}},
		{"basic.conf", "web-1", Options{User: "luser", Options: []string{"User ouser"}}},
		{"basic.conf", "web-1", Options{IdentityFiles: []string{id1, id2}, Options: []string{"IdentityFile=~/.ssh/o_id"}}},
		{"basic.conf", "web-1", Options{JumpHosts: "j1,j2@j3:33"}},
		{"basic.conf", "web-1", Options{JumpHosts: "none"}},
		{"basic.conf", "other", Options{Options: []string{"UserKnownHostsFile=none", "ProxyJump=a,b"}}},
		{"basic.conf", "other", Options{Options: []string{"ProxyCommand=ssh -W %h:%p x", "ProxyJump=a"}}},
		{"include.conf", "inc-a", Options{}},
		{"include.conf", "inc-b", Options{}},
		{"include.conf", "inc-top", Options{}},
		{"include.conf", "inc-inner", Options{}},
		{"include.conf", "inc-x", Options{}},
		{"include.conf", "zzz", Options{}},
		{"match.conf", "m-1", Options{}},
		{"match.conf", "m-orig", Options{}},
		{"match.conf", "fin", Options{}},
		{"match.conf", "other", Options{User: "origuser"}},
		{"env.conf", "x", Options{}},
		{"env.conf", "y", Options{}},
		{"env.conf", "x", Options{Options: []string{"SendEnv=-LC_* ONE", "SetEnv=Z=0"}}},
		{"final.conf", "alias", Options{}},
		{"final.conf", "pct", Options{}},
		{"final.conf", "other", Options{}},
		{"final.conf", "CaSe", Options{}},
		{"exec.conf", "ex-name", Options{}},
		{"exec.conf", "ex-yes", Options{}},
		{"exec.conf", "ex-yes", Options{Port: 2200, User: "cliuser"}},
		{"exec.conf", "ex-no", Options{}},
		{"exec.conf", "ex-esc", Options{}},
		{"exec.conf", "ex-alias", Options{}},
		{"exec.conf", "ex-never", Options{}},
		{"control.conf", "cm-auto", Options{}},
		{"control.conf", "cm-tokens", Options{}},
		{"control.conf", "cm-off", Options{}},
		{"control.conf", "cm-no", Options{}},
		{"control.conf", "other", Options{}},
		{"control.conf", "cm-auto", Options{Options: []string{"ControlPath=none", "ControlMaster=ask"}}},
		{"question.conf", "web", Options{}},
		{"question.conf", "webx", Options{}},
		{"question.conf", "db", Options{}},
		{"question.conf", "dbx", Options{}},
	}
	for _, c := range cases {
		name := c.file + "/" + c.alias
		if !reflect.DeepEqual(c.opts, Options{}) {
			name += "/flags"
		}
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", "config", c.file)
			args := []string{"-F", file}
			if c.opts.User != "" {
				args = append(args, "-l", c.opts.User)
			}
			if c.opts.Port != 0 {
				args = append(args, "-p", strconv.Itoa(c.opts.Port))
			}
			for _, f := range c.opts.IdentityFiles {
				args = append(args, "-i", f)
			}
			if c.opts.JumpHosts != "" {
				args = append(args, "-J", c.opts.JumpHosts)
			}
			for _, o := range c.opts.Options {
				args = append(args, "-o", o)
			}
			args = append(args, c.alias)
			want := sshG(t, home, args...)

			o := c.opts
			o.ConfigFile = file
			got, err := Resolve(c.alias, o)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			one := func(k string) string {
				if v := want[k]; len(v) > 0 {
					return v[0]
				}
				return ""
			}
			check := func(field string, got, want any) {
				t.Helper()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: got %#v, ssh -G says %#v", field, got, want)
				}
			}
			check("HostName", got.HostName, one("hostname"))
			check("Port", strconv.Itoa(got.Port), one("port"))
			check("User", got.User, one("user"))

			// ssh -G prints IdentityFile and CertificateFile unexpanded.
			expand := strings.NewReplacer(
				"%%", "%", "%d", home, "%u", localU, "%h", one("hostname"),
				"%r", one("user"), "%p", one("port"), "%n", got.Alias)
			exp := func(s string) string {
				if strings.HasPrefix(s, "~/") {
					s = home + s[1:]
				}
				return expand.Replace(s)
			}
			var wantIDs, wantCerts []string
			for _, f := range want["identityfile"] {
				wantIDs = append(wantIDs, exp(f))
			}
			for _, f := range want["certificatefile"] {
				wantCerts = append(wantCerts, exp(f))
			}
			check("IdentityFiles", got.IdentityFiles, wantIDs)
			check("CertificateFiles", got.CertificateFiles, wantCerts)

			var wantJump []string
			if pj := one("proxyjump"); pj != "" {
				wantJump = strings.Split(pj, ",")
			}
			check("ProxyJump", got.ProxyJump, wantJump)
			check("ProxyCommand set", got.ProxyCommand != "", one("proxycommand") != "")
			check("StrictHostKeyChecking", got.StrictHostKeyChecking, strings.ReplaceAll(one("stricthostkeychecking"), "false", "no"))

			fromPW := func(s string) string {
				if pwHome != "" && pwHome != home && (s == pwHome || strings.HasPrefix(s, pwHome+"/")) {
					return home + s[len(pwHome):]
				}
				return s
			}
			var wantKH []string
			for _, f := range strings.Fields(one("userknownhostsfile")) {
				if f != "none" {
					wantKH = append(wantKH, fromPW(f))
				}
			}
			if wantKH == nil {
				wantKH = []string{}
			}
			check("UserKnownHostsFiles", got.UserKnownHostsFiles, wantKH)
			check("GlobalKnownHostsFiles", strings.Join(got.GlobalKnownHostsFiles, " "), one("globalknownhostsfile"))
			check("HostKeyAlias", got.HostKeyAlias, one("hostkeyalias"))
			check("IdentitiesOnly", got.IdentitiesOnly, one("identitiesonly") == "yes")
			wantCT := time.Duration(0)
			if v := one("connecttimeout"); v != "none" {
				n, _ := strconv.Atoi(v)
				wantCT = time.Duration(n) * time.Second
			}
			check("ConnectTimeout", got.ConnectTimeout, wantCT)
			n, _ := strconv.Atoi(one("serveraliveinterval"))
			check("ServerAliveInterval", got.ServerAliveInterval, time.Duration(n)*time.Second)
			check("ServerAliveCountMax", strconv.Itoa(got.ServerAliveCountMax), one("serveralivecountmax"))
			check("BindAddress", got.BindAddress, one("bindaddress"))
			check("SendEnv", got.SendEnv, want["sendenv"])
			check("SetEnv", got.SetEnv, want["setenv"])
			check("ConnectionAttempts", strconv.Itoa(got.ConnectionAttempts), one("connectionattempts"))
			check("AddressFamily", got.AddressFamily, one("addressfamily"))
			check("ControlMaster", got.ControlMaster, strings.NewReplacer("true", "yes", "false", "no").Replace(one("controlmaster")))
			check("ControlPath", got.ControlPath, fromPW(one("controlpath")))
			if got.KexAlgorithms != nil {
				check("KexAlgorithms", strings.Join(got.KexAlgorithms, ","), one("kexalgorithms"))
			}
			if got.HostKeyAlgorithms != nil || strings.HasPrefix(c.alias, "hka") {
				check("HostKeyAlgorithms", strings.Join(got.HostKeyAlgorithms, ","), one("hostkeyalgorithms"))
			}
			pka := got.PubkeyAcceptedAlgorithms
			if pka == nil {
				pka = defaultPubkeyAlgos
			}
			check("PubkeyAcceptedAlgorithms", strings.Join(pka, ","), one("pubkeyacceptedalgorithms"))
		})
	}
}
