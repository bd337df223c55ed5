// Command agentmain is the smallest toworker agent: a main that only serves
// as the agent. The platform tests cross-compile it when ./cmd/toworker does
// not build; it is not run.
package main

import (
	"fmt"
	"os"

	"github.com/toworker/toworker/agent"
)

func main() {
	agent.ServeIfAgent()
	fmt.Fprintln(os.Stderr, "agentmain: a toworker agent; the master starts it")
	os.Exit(2)
}
