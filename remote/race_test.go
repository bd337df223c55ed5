//go:build race

package remote_test

// raceEnabled: the tests run under the race detector, whose own runtime
// lives in the workers too.
const raceEnabled = true
