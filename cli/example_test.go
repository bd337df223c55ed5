package cli_test

import (
	"context"
	"os"
	"strings"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/cli"
)

// ResizeIn is the input of a user's own function. Plain field names: the
// JSON given to `call` may spell them in any case ({"path": ...}).
type ResizeIn struct {
	Path  string
	Width int
}

// ResizeOut is its result, printed by `call` as JSON.
type ResizeOut struct {
	Path          string
	Width, Height int
}

// Resize is registered at package level, so that it exists both in the
// master and in the agent the master ships: the same binary.
var Resize = agent.Register("example.resize", func(ctx context.Context, in ResizeIn) (ResizeOut, error) {
	// … resize the image on the host …
	return ResizeOut{Path: in.Path, Width: in.Width, Height: in.Width * 3 / 4}, nil
})

// A program that registers functions gets the whole toworker command line,
// with its own functions callable, from one call in main:
//
//	myfleet call -H 'web[1-4]' example.resize '{"path": "/srv/a.png", "width": 640}'
//	myfleet run -H 'web[1-4]' -- uptime
//	myfleet put -H 'web[1-4]' ./static /srv
func ExampleMain() {
	// func main() {
	cli.Main() // serves as the agent when started as one; otherwise runs the CLI on os.Args and exits
	// }
}

// Run is Main without the signal handling and the exit: tests and
// programs that embed the command line call it with their own arguments,
// context and writers.
func ExampleRun() {
	code := cli.Run(context.Background(), []string{"toworker", "hosts", "web[1-3],db[01-02]", "-x", "web2"},
		strings.NewReader(""), os.Stdout, os.Stderr)
	if code != cli.ExitOK {
		os.Exit(code)
	}
	// Output:
	// web1
	// web3
	// db01
	// db02
}
