package remote

// EventQueue is eventQueue, for the fault tests of package remote_test.
const EventQueue = eventQueue

// WithKernelInfo returns o with the directory the bootstrap reads the
// host's ostype and arch from set to dir (a directory that does not exist:
// the bootstrap runs uname, as on hosts that are not Linux).
func WithKernelInfo(o AgentOptions, dir string) AgentOptions {
	o.kernelInfo = dir
	return o
}
