package remote

// EventQueue is eventQueue, for the fault tests of package remote_test.
const EventQueue = eventQueue
