package sshdial

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if goroutines (keepalives, agent connections,
// ProxyCommand copiers) outlive the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
