package sshmux

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if goroutines (a Session's reader, a fake
// master's) outlive the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
