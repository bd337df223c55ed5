package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// bigKnownHostsLines is the size of the known_hosts of bigKnownHostsConfig:
// what a workstation that has reached a fleet for years holds.
const bigKnownHostsLines = 2000

// bigKnownHostsConfig writes a copy of the client config whose
// known_hosts has bigKnownHostsLines hashed lines of other hosts (half
// ed25519, a third ECDSA, the rest RSA) before the lab's, hashed too, as
// Debian's HashKnownHosts yes writes them.
func (e *env) bigKnownHostsConfig() (string, error) {
	_, edk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	eck, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	rk, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return "", err
	}
	var keys []ssh.PublicKey
	for _, k := range []any{edk.Public(), &eck.PublicKey, &rk.PublicKey} {
		p, err := ssh.NewPublicKey(k)
		if err != nil {
			return "", err
		}
		keys = append(keys, p)
	}
	var b bytes.Buffer
	for i := range bigKnownHostsLines {
		k := keys[0]
		switch {
		case i%6 >= 5:
			k = keys[2]
		case i%6 >= 3:
			k = keys[1]
		}
		fmt.Fprintln(&b, knownhosts.Line([]string{knownhosts.HashHostname(fmt.Sprintf("node%04d.example.org", i))}, k))
	}
	lab, err := os.ReadFile(e.lab.KnownHostsFile)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(lab))
	for sc.Scan() {
		host, key, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", knownhosts.HashHostname(host), key)
	}
	kh := filepath.Join(e.dir, "known_hosts_big")
	if err := os.WriteFile(kh, b.Bytes(), 0o644); err != nil {
		return "", err
	}
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		return "", err
	}
	out := bytes.ReplaceAll(cfg, []byte(e.lab.KnownHostsFile), []byte(kh))
	if bytes.Equal(out, cfg) {
		return "", fmt.Errorf("the lab's config does not name its known_hosts %s", e.lab.KnownHostsFile)
	}
	path := filepath.Join(e.dir, "ssh_config_big_known_hosts")
	return path, os.WriteFile(path, out, 0o644)
}

// bigKnownHostsFigure is the cold fan-out again with that known_hosts:
// ssh reads it in every process, toworker once per process.
func (e *env) bigKnownHostsFigure(pp params) {
	n := len(e.hosts)
	f := &Figure{ID: "fanout_big_known_hosts", Section: "fanout", Unit: "ms",
		Title:  fmt.Sprintf("%d hosts, cold, with a known_hosts of %d more hashed lines", n, bigKnownHostsLines),
		Target: "reported"}
	defer e.add(f)
	cfg, err := e.bigKnownHostsConfig()
	if err != nil {
		e.fail(f, "known_hosts", err)
		return
	}
	script := `s=0; pids=; for h in "$@"; do ssh -F "$0" "$h" true & pids="$pids $!"; done; for p in $pids; do wait $p || s=1; done; exit $s`
	client := map[string]float64{}
	counted := map[string]int{}
	withClient := func(v variantFn) variantFn {
		run := v.run
		v.run = func() (float64, error) {
			x, err := run()
			if err == nil {
				client[v.name] += e.lastChildCPU
				counted[v.name]++
			}
			return x, err
		}
		return v
	}
	bash := withClient(variantFn{name: fmt.Sprintf("bash loop of %d `ssh hN true &`, wait", n), role: "baseline", run: func() (float64, error) {
		d, err := e.run(2*time.Minute, nil, "bash", append([]string{"-c", script, cfg}, e.hosts...)...)
		return ms(d), err
	}})
	cli := withClient(variantFn{name: fmt.Sprintf("`toworker run -H h[1-%d] -- true`", n), role: "toworker", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(2*time.Minute, "run", "-H", hostRange(n), "-F", cfg, "--", "true")
		return ms(d), err
	}})
	e.measure(f, pp.fanRounds, 2*pp.budget, false, bash, cli)
	var parts []string
	for _, v := range []variantFn{bash, cli} {
		if c := counted[v.name]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f", v.name, client[v.name]*1000/float64(c*n)))
		}
	}
	if len(parts) > 0 {
		f.addNote(fmt.Sprintf("Client CPU per host (ms, the command with its children): %s. The file has %d hashed lines of other hosts (ed25519, ECDSA and RSA keys) before the lab's, hashed as well (HashKnownHosts yes, Debian's default).", strings.Join(parts, "; "), bigKnownHostsLines))
	}
}
