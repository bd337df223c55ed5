// Command demo runs a registered Go function on a host over SSH, with a
// callback into the master and the remote output streamed back prefixed.
//
// With no arguments it starts a throwaway OpenSSH sshd on a loopback address
// (keys generated on the spot), runs against it, and stops it: `make demo`.
// Given host names (ssh aliases), it runs on those instead, reading
// ~/.ssh/config and known_hosts like ssh:
//
//	go build -o demo ./examples/demo && ./demo web1 web2
package main

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/callback"
	"github.com/toworker/toworker/internal/sshdtest"
	"github.com/toworker/toworker/remote"
)

// WordCountIn names the file to count words in.
type WordCountIn struct {
	Path string
}

// WordCountOut is what the host found.
type WordCountOut struct {
	Host  string
	Lines int
	Words int
	Top   string // the most frequent word
}

// WordCount runs on the host: it reads a file there, reports progress to the
// master through a callback, logs through the master's logger, and prints.
var WordCount = agent.Register("demo.wordcount", func(ctx context.Context, in WordCountIn) (WordCountOut, error) {
	f, err := os.Open(in.Path)
	if err != nil {
		return WordCountOut{}, err
	}
	defer f.Close()
	out := WordCountOut{Host: callback.Host(ctx)}
	freq := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out.Lines++
		for _, w := range strings.Fields(sc.Text()) {
			out.Words++
			freq[strings.ToLower(w)]++
		}
		if out.Lines%100 == 0 {
			var ack string
			if err := callback.Call(ctx, "progress", out.Lines, &ack); err != nil {
				return out, err
			}
		}
	}
	for w, n := range freq {
		if n > freq[out.Top] || (n == freq[out.Top] && w < out.Top) {
			out.Top = w
		}
	}
	callback.Logger(ctx).Info("counted", "file", in.Path, "words", out.Words)
	fmt.Printf("read %d lines of %s as pid %d on %s/%s\n", out.Lines, in.Path, os.Getpid(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintln(os.Stderr, "this line went to stderr")
	return out, sc.Err()
})

func main() {
	agent.ServeIfAgent() // this binary is also the agent it ships
	log.SetFlags(0)
	hosts := os.Args[1:]
	file := "/etc/services"
	if len(hosts) == 0 {
		lab, err := sshdtest.StartLab(sshdtest.LabOptions{Hosts: 2})
		if err != nil {
			log.Fatalf("demo: %v", err)
		}
		defer lab.Close()
		os.Setenv("HOME", lab.HomeDir) // its ~/.ssh/config names h1 and h2
		fmt.Printf("started OpenSSH sshd on %s (h1) and %s (h2)\n", lab.Servers[0].Addr(), lab.Servers[1].Addr())
		hosts = []string{"h1", "h2"}
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		start := time.Now()
		remote.DoRemoteJob(ctx, remote.Job{
			Host: h, Chdir: "/", Func: WordCount.Name(), Data: WordCountIn{Path: file}, Desc: "count words",
			Callbacks: map[string]remote.Callback{
				"progress": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
					var lines int
					if err := req.Decode(&lines); err != nil {
						return nil, err
					}
					if lines%200 == 0 {
						fmt.Printf("%s: progress: %d lines\n", req.Host, lines)
					}
					return "ok", nil
				},
			},
			WhenDone: func(r remote.Result) {
				var out WordCountOut
				if err := r.Decode(&out); err != nil {
					fmt.Printf("%s: failed: %v\n", r.Host, err)
					return
				}
				fmt.Printf("%s: %d lines, %d words, most frequent %q (%v)\n", r.Host, out.Lines, out.Words, out.Top, time.Since(start).Round(time.Millisecond))
			},
			OnFailure: func(err error) { fmt.Println(err) },
			AllDone:   wg.Done,
		})
	}
	wg.Wait()
	// A typed call reuses the warm connection and agent. (The file is short
	// enough to need no progress callback, which remote.Call cannot take.)
	start := time.Now()
	out, err := remote.Call(ctx, hosts[0], WordCount, WordCountIn{Path: "/etc/os-release"})
	if err != nil {
		log.Fatalf("demo: %v", err)
	}
	fmt.Printf("warm call on %s: %d words in %v\n", out.Host, out.Words, time.Since(start).Round(time.Microsecond))
	remote.CloseDefault()
}
