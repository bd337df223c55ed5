package hostlist_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/toworker/toworker/internal/hostlist"
)

func Example() {
	// toworker -H 'web[01-04],db1' -H 'rack[1-2]-node[1-2]' -x 'web03,rack2-*'
	hosts, err := hostlist.ExpandAll(
		[]string{"web[01-04],db1", "rack[1-2]-node[1-2]"},
		[]string{"web03,rack2-*"},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.Join(hosts, " "))
	fmt.Println(hostlist.Compress(hosts))
	// Output:
	// web01 web02 web04 db1 rack1-node1 rack1-node2
	// db1,rack1-node[1-2],web[01-02,04]
}

func ExampleExpand() {
	for _, expr := range []string{"foo[1-3,5]", "node[1-10/2]", "da[2-3]c[1-2]"} {
		hosts, _ := hostlist.Expand(expr)
		fmt.Println(expr, "=", hosts)
	}
	// Output:
	// foo[1-3,5] = [foo1 foo2 foo3 foo5]
	// node[1-10/2] = [node1 node3 node5 node7 node9]
	// da[2-3]c[1-2] = [da2c1 da2c2 da3c1 da3c2]
}

func ExampleCompress() {
	fmt.Println(hostlist.Compress([]string{"web1", "web2", "web3", "web5", "db1", "web01", "web02"}))
	// Output: db1,web[1-3,5,01-02]
}

func ExampleReadFile() {
	const file = `# web tier
web[01-03]   # frontends
db1
`
	exprs, _ := hostlist.ReadFile(strings.NewReader(file))
	hosts, _ := hostlist.ExpandAll(exprs, nil)
	fmt.Println(exprs, hosts)
	// Output: [web[01-03] db1] [web01 web02 web03 db1]
}

func ExampleError() {
	_, err := hostlist.Expand("web[1-")
	fmt.Println(err)
	var e *hostlist.Error
	if errors.As(err, &e) {
		fmt.Println(e.Caret())
	}
	// Output:
	// hostlist: web[1-: unexpected end of expression at column 7
	// web[1-
	//       ^
}
