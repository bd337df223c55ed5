// Command myfleet is a user's own fleet tool: it registers Go functions and
// gets the whole toworker command line by calling cli.Main, so its
// functions can be called on hosts with JSON input:
//
//	go build -o myfleet ./examples/myfleet
//	./myfleet funcs
//	./myfleet call -H 'web[1-4]' myfleet.diskfree '{"path": "/var"}'
//	./myfleet call -N -H web1 myfleet.diskfree '{"path": "/"}' | jq .FreeBytes
//	./myfleet run -H 'web[1-4]' -- uptime
//
// myfleet ships itself to the hosts as the agent (the hosts must be of the
// same OS and architecture, or see --agent-dir).
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/callback"
	"github.com/toworker/toworker/cli"
)

// DiskFreeIn names the file system to look at.
type DiskFreeIn struct {
	Path string
}

// DiskFreeOut is what the host reports.
type DiskFreeOut struct {
	Host       string
	Path       string
	TotalBytes uint64
	FreeBytes  uint64
	UsedPct    float64
}

// DiskFree runs on the host: it reads the file system's usage with
// statfs(2), logs through the master's logger and returns the figures.
var DiskFree = agent.Register("myfleet.diskfree", func(ctx context.Context, in DiskFreeIn) (DiskFreeOut, error) {
	if in.Path == "" {
		in.Path = "/"
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(in.Path, &st); err != nil {
		return DiskFreeOut{}, fmt.Errorf("statfs %s: %w", in.Path, err)
	}
	out := DiskFreeOut{
		Host:       callback.Host(ctx),
		Path:       in.Path,
		TotalBytes: uint64(st.Blocks) * uint64(st.Bsize),
		FreeBytes:  uint64(st.Bavail) * uint64(st.Bsize), // Bavail is signed on FreeBSD
	}
	if out.TotalBytes > 0 {
		out.UsedPct = 100 * float64(out.TotalBytes-out.FreeBytes) / float64(out.TotalBytes)
	}
	if out.UsedPct > 90 {
		fmt.Fprintf(os.Stderr, "%s is %.0f%% full\n", in.Path, out.UsedPct)
	}
	return out, nil
})

func main() {
	cli.Main()
}
