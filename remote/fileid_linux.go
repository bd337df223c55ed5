package remote

import "syscall"

// statTimes returns st's modification and change times.
func statTimes(st *syscall.Stat_t) (mtime, ctime syscall.Timespec) { return st.Mtim, st.Ctim }
