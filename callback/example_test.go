package callback_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/toworker/toworker/callback"
)

type Progress struct{ Done, Of int }

// Inside a registered function, Call reaches the master's handler of that
// name for the job. Outside a job (a local unit test) it says so.
func ExampleCall() {
	var ack string
	err := callback.Call(context.Background(), "progress", Progress{Done: 1, Of: 10}, &ack)
	fmt.Println(errors.Is(err, callback.ErrNoJob))
	// Output: true
}
