//go:build linux

package sshdtest

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// sig is a signal that this package sends.
type sig int

const (
	sigStop sig = iota
	sigCont
	sigTerm
	sigKill
)

var sigs = map[sig]syscall.Signal{
	sigStop: syscall.SIGSTOP,
	sigCont: syscall.SIGCONT,
	sigTerm: syscall.SIGTERM,
	sigKill: syscall.SIGKILL,
}

// sysProcAttr puts sshd in a process group of its own, and has the kernel
// stop it (SIGTERM) if the thread that started it dies, so a crashed test
// binary does not leave listeners behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// signalGroup sends s to the process group pgid.
func signalGroup(pgid int, s sig) error {
	if pgid <= 1 {
		return errors.New("sshdtest: refusing to signal process group <= 1")
	}
	return syscall.Kill(-pgid, sigs[s])
}

// exited reports whether our child pid has exited, without reaping it: a
// zombie keeps its pid (and so its process group id) from being reused.
func exited(pid int) bool {
	for i := 0; i < 100; i++ {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return true // ECHILD: not (or no longer) our child
		}
		return info.Signo != 0
	}
	return false
}

// proc identifies a process: its pid plus its start time, which tells a
// process from a later one that reuses the pid.
type proc struct {
	pid   int
	start uint64
}

// procStat is what this package reads from /proc/<pid>/stat.
type procStat struct {
	state           byte
	ppid, pgid, sid int
	start           uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// "pid (comm) state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime priority nice
	// num_threads itrealvalue starttime ..."; comm may hold anything.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("sshdtest: bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procStat{}, errors.New("sshdtest: short /proc stat")
	}
	var st procStat
	st.state = f[0][0]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgid, _ = strconv.Atoi(f[2])
	st.sid, _ = strconv.Atoi(f[3])
	st.start, _ = strconv.ParseUint(f[19], 10, 64)
	return st, nil
}

// connectionHandlers lists the per-connection sshd processes of the
// listener pid: its children that sshd has moved into a session (and
// process group) of their own. Children still in the listener's group are
// covered by signalling that group.
func connectionHandlers(listener int) []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.ppid != listener || st.pgid != pid {
			continue
		}
		out = append(out, proc{pid: pid, start: st.start})
	}
	return out
}

// countConnectionHandlers counts the per-connection sshd processes of
// all the listeners, in one pass over /proc.
func countConnectionHandlers(listeners map[int]bool) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && listeners[st.ppid] && st.pgid == pid && st.state != 'Z' {
			n++
		}
	}
	return n
}

// alive reports whether p still runs (exists, is the same process, and is
// not a zombie).
func (p proc) alive() bool {
	st, err := readStat(p.pid)
	return err == nil && st.start == p.start && st.state != 'Z' && st.state != 'X'
}

// allGone reports whether none of ps is alive.
func allGone(ps []proc) bool {
	for _, p := range ps {
		if p.alive() {
			return false
		}
	}
	return true
}
