package agent

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
)

// agentFlag is the first argument that makes a binary the agent.
const agentFlag = "--toworker-agent"

// IsAgent reports whether this process was started as a toworker agent
// (boss or worker).
func IsAgent() bool {
	return len(os.Args) >= 3 && os.Args[1] == agentFlag
}

// ServeIfAgent turns this process into the agent when toworker started it as
// one on a remote host, and exits when the agent's work is done. Otherwise it
// returns at once. Call it first thing in main, before flags are parsed or
// anything is printed.
func ServeIfAgent() {
	if !IsAgent() {
		return
	}
	freeze()
	var err error
	switch role := os.Args[2]; role {
	case "boss":
		err = serveBoss()
	case "worker":
		nameWorker()
		stopOnTerm()
		err = serveWorker()
	default:
		err = fmt.Errorf("unknown agent role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "toworker agent: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// stopOnTerm makes a worker kill its whole process group (itself and the
// job's children) when the boss goes away (Pdeathsig) or asks it to stop.
func stopOnTerm() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-c
		syscall.Kill(0, syscall.SIGKILL)
	}()
}

func goos() string   { return runtime.GOOS }
func goarch() string { return runtime.GOARCH }

// selfHash is the agent's content hash as the cache named it, or "" when the
// binary does not run from the cache.
func selfHash() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	name := filepath.Base(exe)
	if len(name) == 64 {
		return name
	}
	return ""
}
