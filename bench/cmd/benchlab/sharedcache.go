package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// sharedCacheFigure is the first run of an agent on hosts that share one
// agent cache, as cluster nodes with their home directory on NFS do: the
// master uploads it to one host while the others wait for it and find it.
// Against it, the same first run with a cache of each host's own, where each
// host gets an upload.
func (e *env) sharedCacheFigure(pp params) {
	n := len(e.hosts)
	f := &Figure{ID: "fanout_shared_cache", Section: "fanout", Unit: "ms",
		Title:  fmt.Sprintf("%d hosts, first ever (agent uploaded): one agent cache shared by all, as a home on NFS, against one each", n),
		Target: "reported"}
	defer e.add(f)
	uploads := map[string][]int{}
	counted := func(name string, d time.Duration, err error) (float64, error) {
		if err == nil {
			u, ok := uploadsOf(e.lastOutput)
			if !ok {
				return 0, fmt.Errorf("no upload count in the command's summary: %q", e.lastOutput)
			}
			uploads[name] = append(uploads[name], u)
		}
		return ms(d), err
	}
	own := variantFn{name: fmt.Sprintf("`toworker run -H h[1-%d] -- true`, every host's own cache removed", n), role: "reference", skip: e.twNote}
	own.run = func() (float64, error) {
		for _, s := range e.lab.Servers {
			if err := clearCache(s.CacheDir); err != nil {
				return 0, err
			}
		}
		d, err := e.cli(2*time.Minute, "run", "-H", hostRange(n), "-F", e.cfg, "--", "true")
		return counted(own.name, d, err)
	}
	shared := variantFn{name: fmt.Sprintf("`toworker run --agent-cache DIR -H h[1-%d] -- true`, DIR new and shared by all", n), role: "toworker", skip: e.twNote}
	shared.run = func() (float64, error) {
		dir, err := os.MkdirTemp(e.dir, "shared-cache")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		d, err := e.cli(2*time.Minute, "run", "--agent-cache", dir, "-H", hostRange(n), "-F", e.cfg, "--", "true")
		return counted(shared.name, d, err)
	}
	e.measure(f, min(pp.fanRounds, 3), 2*pp.budget, false, own, shared)
	var parts []string
	for _, v := range []variantFn{own, shared} {
		if u := uploads[v.name]; len(u) > 0 {
			parts = append(parts, fmt.Sprintf("%s: %s", v.name, strings.Trim(fmt.Sprint(u), "[]")))
		}
	}
	if len(parts) > 0 {
		_, gz, _ := gzipSize(e.tw)
		f.addNote(fmt.Sprintf("Agents uploaded in each round (warm-up included; %.1f MiB each): %s. With a shared cache the script names it by a token kept there (.id), and the master has the hosts asking for the same agent under the same token wait for one upload and look again", mib(gz), strings.Join(parts, "; ")))
	}
	// Every host's cache as the figures after this one expect it.
	if err := e.prime(); err != nil {
		e.fail(f, "prime agents again", err)
	}
}

var uploadedRE = regexp.MustCompile(`agent uploaded to (\d+) host`)

// uploadsOf reads how many hosts the toworker command's summary says it
// uploaded the agent to (none when it does not say).
func uploadsOf(out string) (int, bool) {
	if !strings.Contains(out, " ok") {
		return 0, false
	}
	m := uploadedRE.FindStringSubmatch(out)
	if m == nil {
		return 0, true
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}
