package remote_test

import (
	"context"
	"fmt"
	"os"

	"github.com/toworker/toworker/remote"
)

// A typed call: the function runs on the host, its result comes back typed.
func ExampleCall() {
	sq, err := remote.Call(context.Background(), "h1", Square, 12)
	fmt.Println(sq, err)
	// Output: 144 <nil>
}

// DoRemoteJob with a callback into the master and the job's LocalData.
func ExampleDoRemoteJob() {
	progress := 0
	run := remote.DoRemoteJob(context.Background(), remote.Job{
		Host: "h1",
		Func: Count.Name(),
		Data: CountIn{Words: []string{"to", "worker"}},
		Desc: "count words",
		Callbacks: map[string]remote.Callback{
			"progress": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
				*req.LocalData.(*int)++
				return "ack", nil
			},
		},
		LocalData: &progress,
		OnOutput:  func(line string) { fmt.Println("out:", line) },
		OnError:   func(line string) {}, // stderr lines; nil would print them prefixed
	})
	res, err := run.Wait()
	var out CountOut
	if err == nil {
		err = res.Decode(&out)
	}
	fmt.Println(out.N, out.Acks, progress, err)
	// Output:
	// out: word 0: to
	// out: word 1: worker
	// 2 [ack ack] 2 <nil>
}

// A pool spreads jobs over hosts; Next returns them in completion order.
func ExampleNewPool() {
	pool, err := remote.NewPool(context.Background(), remote.PoolConfig{
		Hosts:      []string{"h1", "h2", "h3", "h4"},
		MaxPerHost: 2,
		Retries:    1,
		Stdout:     os.Stdout,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	for i := range 10 {
		pool.Submit(context.Background(), remote.Job{Func: Square.Name(), Data: i})
	}
	sum := 0
	for pool.Pending() > 0 {
		run, err := pool.Next(context.Background())
		if err != nil {
			break
		}
		var sq int
		res, err := run.Wait()
		if err == nil {
			err = res.Decode(&sq)
		}
		sum += sq
	}
	fmt.Println("sum of squares:", sum)
	// Output: sum of squares: 285
}

// Many short calls to one host, pipelined: the master keeps 64 calls sent,
// two workers run them, and each worker finds its next call waiting when
// it sends a result.
func ExamplePoolConfig_pipeline() {
	pool, err := remote.NewPool(context.Background(), remote.PoolConfig{
		Hosts:      []string{"h1"},
		MaxPerHost: 2,
		Pipeline:   62,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	runs := make([]*remote.Run, 1000)
	for i := range runs {
		runs[i] = pool.Submit(context.Background(), remote.Job{Func: Square.Name(), Data: i})
	}
	sum := 0
	for _, run := range runs {
		var sq int
		res, err := run.Wait()
		if err == nil {
			err = res.Decode(&sq)
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		sum += sq
	}
	fmt.Println("sum of squares:", sum)
	// Output: sum of squares: 332833500
}

// A program that exits once its calls are done need not wait for the
// agents to confirm they stopped: with StopWait negative, Close returns a
// round trip sooner, and each agent stops on the goodbye by itself.
func ExamplePoolConfig_stopWait() {
	pool, err := remote.NewPool(context.Background(), remote.PoolConfig{
		Hosts:    []string{"h1"},
		StopWait: -1,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	sq, err := remote.CallOn(context.Background(), pool, "h1", Square, 9)
	pool.Close()
	fmt.Println(sq, err)
	// Output: 81 <nil>
}
