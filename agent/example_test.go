package agent_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/toworker/toworker/agent"
)

type UpperIn struct{ Text string }
type UpperOut struct{ Text string }

// Register a function at package level; master and agent share the handle.
var Upper = agent.Register("example.upper", func(ctx context.Context, in UpperIn) (UpperOut, error) {
	return UpperOut{Text: strings.ToUpper(in.Text)}, nil
})

func ExampleRegister() {
	fmt.Println(Upper.Name())
	// Output: example.upper
}

// Cascade runs another registered function in the same worker.
func ExampleCascade() {
	var out UpperOut
	err := agent.Cascade(context.Background(), Upper.Name(), UpperIn{Text: "toworker"}, &out)
	fmt.Println(out.Text, err)
	// Output: TOWORKER <nil>
}

// ServeIfAgent goes first in main: started by toworker on a host, the binary
// becomes the agent; otherwise it returns at once.
func ExampleServeIfAgent() {
	agent.ServeIfAgent()
	fmt.Println("running as the master")
	// Output: running as the master
}
