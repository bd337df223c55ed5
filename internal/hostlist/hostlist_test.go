package hostlist

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func seq(prefix string, lo, hi int, width int, suffix string) []string {
	var out []string
	for i := lo; i <= hi; i++ {
		out = append(out, fmt.Sprintf("%s%0*d%s", prefix, width, i, suffix))
	}
	return out
}

var expandTests = []struct {
	expr string
	want []string
}{
	// pdsh(1), HOSTLIST EXPRESSIONS and -w.
	{"foo[1-5]", seq("foo", 1, 5, 1, "")},
	{"foo[01-05]", seq("foo", 1, 5, 2, "")},
	{"foo[1-3,5]", []string{"foo1", "foo2", "foo3", "foo5"}},
	{"foo[7,9-10]", []string{"foo7", "foo9", "foo10"}},
	{"foo[0-3]-eth0", seq("foo", 0, 3, 1, "-eth0")},
	{"foo[19]", []string{"foo19"}}, // not a character class
	{"foo1,foo9", []string{"foo1", "foo9"}},
	{"foo[1,9]", []string{"foo1", "foo9"}},
	{"user1@host0", []string{"user1@host0"}},
	{"root@web[1-2]", []string{"root@web1", "root@web2"}},
	// ClusterShell nodeset(1) / RangeSet.
	{"node[1-10/2]", []string{"node1", "node3", "node5", "node7", "node9"}},
	{"node[0-10/2]", []string{"node0", "node2", "node4", "node6", "node8", "node10"}},
	{"da[2-3]c[1-2]", []string{"da2c1", "da2c2", "da3c1", "da3c2"}},
	{"cluster[1-30]", seq("cluster", 1, 30, 1, "")},
	{"node[001-003]", seq("node", 1, 3, 3, "")},
	{"node[08-11]", []string{"node08", "node09", "node10", "node11"}},
	// Brief and general syntax.
	{"web[1-4]", seq("web", 1, 4, 1, "")},
	{"web[01-10]", seq("web", 1, 10, 2, "")},
	{"web[1-10]", seq("web", 1, 10, 1, "")},
	{"web[1-010]", seq("web", 1, 10, 1, "")}, // width comes from the lower bound
	{"web[001-10]", seq("web", 1, 10, 3, "")},
	{"web[1,3,5-7]", []string{"web1", "web3", "web5", "web6", "web7"}},
	{"rack[1-2]-node[01-03]", []string{
		"rack1-node01", "rack1-node02", "rack1-node03",
		"rack2-node01", "rack2-node02", "rack2-node03",
	}},
	{"a[1-2]b[3-4]c[5-6]", []string{
		"a1b3c5", "a1b3c6", "a1b4c5", "a1b4c6", "a2b3c5", "a2b3c6", "a2b4c5", "a2b4c6",
	}},
	{"n[1-3/5]", []string{"n1"}},
	{"n[0]", []string{"n0"}},
	{"n[00-02]", []string{"n00", "n01", "n02"}},
	{"n[1,01,001]", []string{"n1", "n01", "n001"}},
	{"[1-3]", []string{"1", "2", "3"}},
	{"10.0.0.[1-3]", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}},
	{"n[1]x[2]", []string{"n1x2"}},
	{"web[1-3],web2,web[2-4]", seq("web", 1, 4, 1, "")},
	{"web[1-3,2-4]", seq("web", 1, 4, 1, "")},
	{"web1,web1", []string{"web1"}},
	{"db1,web[1-2]", []string{"db1", "web1", "web2"}},
	{"nœud[1-2].例", []string{"nœud1.例", "nœud2.例"}},
	{"a-b_c.d:e/f*g?", []string{"a-b_c.d:e/f*g?"}},
	{"web[999999999999999998-999999999999999999]", []string{"web999999999999999998", "web999999999999999999"}},
	// Separators and whitespace.
	{"web1,,web2", []string{"web1", "web2"}},
	{",web1,", []string{"web1"}},
	{" web1 , web2 ", []string{"web1", "web2"}},
	{"web1 web2\tweb3\nweb4\r\n", seq("web", 1, 4, 1, "")},
	{"web[1, 3]", []string{"web1", "web3"}},
	{"web[ 1-2 , 4 ]", []string{"web1", "web2", "web4"}},
	{"", nil},
	{" , ,\t", nil},
}

func TestExpand(t *testing.T) {
	for _, tt := range expandTests {
		got, err := Expand(tt.expr)
		if err != nil {
			t.Errorf("Expand(%q): %v", tt.expr, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Expand(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

var errorTests = []struct {
	expr string
	pos  int
	msg  string // substring of Msg
}{
	{"web[1-", 6, "unexpected end of expression"},
	{"web[1-3", 7, "unexpected end of expression"},
	{"web[", 4, "unexpected end of expression"},
	{"web[1,", 6, "unexpected end of expression"},
	{"web[1-3,web4", 8, "non-numeric"},
	{"web1]", 4, "unbalanced ']'"},
	{"web[1-3]]", 8, "unbalanced ']'"},
	{"]", 0, "unbalanced ']'"},
	{"web[]", 4, `empty range "[]"`},
	{"web[ ]", 5, `empty range "[]"`},
	{"web[1,,3]", 6, "empty range"},
	{"web[1,]", 6, "empty range"},
	{"web[,1]", 4, "empty range"},
	{"web[5-1]", 4, "reversed range 5-1"},
	{"web[1,10-02]", 6, "reversed range"},
	{"web[a-c]", 4, "numbers only (pdsh and nodeset do not support letters)"},
	{"web[1-c]", 6, "non-numeric"},
	{"web[1a]", 5, "non-numeric"},
	{"web[é]", 4, "non-numeric"},
	{"web[1-[2]]", 6, "nested brackets"},
	{"web[[1]]", 4, "nested brackets"},
	{"web[-1]", 4, "negative numbers"},
	{"web[1--3]", 6, "negative numbers"},
	{"web[1-2-3]", 7, `unexpected '-'`},
	{"web[1 2]", 6, `expected ',' or ']'`},
	{"web[1%]", 5, `unexpected '%'`},
	{"web[1-3/0]", 8, "step must be at least 1"},
	{"web[5/2]", 5, "step without a range"},
	{"web[1-3/x]", 8, "non-numeric"},
	{"web[99999999999999999999]", 4, "number too large"},
	{"web[1-99999999999999999999]", 6, "number too large"},
	{"web[0000000000000000001]", 4, "number too large"}, // 19 digits
	{"web[1-1048577]", 4, "more than 1048576 hosts"},
	{"web[1-999999999999999999]", 4, "more than 1048576 hosts"},
	{"web[1-1048576,0]", 14, "more than 1048576 hosts"},
	{"a[1-1024]b[1-1025]", 10, "more than 1048576 hosts"},
	{"a[1-1048576],b", 13, "more than 1048576 hosts"},
	{strings.Repeat("x", 200) + "[1-1000000]", 0, "more than 134217728 bytes"},
	{"web\x01", 3, "invalid character"},
	{"web[1\x00]", 5, "invalid character"},
	{"web\x7f", 3, "invalid character"},
}

func TestExpandErrors(t *testing.T) {
	for _, tt := range errorTests {
		got, err := Expand(tt.expr)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Expand(%q) = %q, %v; want *Error", tt.expr, got, err)
			continue
		}
		if e.Expr != tt.expr || e.Pos != tt.pos || !strings.Contains(e.Msg, tt.msg) || e.Line != 0 {
			t.Errorf("Expand(%q): got Pos %d Msg %q, want Pos %d Msg containing %q", tt.expr, e.Pos, e.Msg, tt.pos, tt.msg)
		}
		if got != nil {
			t.Errorf("Expand(%q) returned names with an error", tt.expr)
		}
		if s := err.Error(); strings.Contains(s, "\n") || !strings.HasPrefix(s, "hostlist: ") {
			t.Errorf("Expand(%q): bad message %q", tt.expr, s)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	_, err := Expand("web[1-")
	const want = "hostlist: web[1-: unexpected end of expression at column 7"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	var e *Error
	errors.As(err, &e)
	if got, want := e.Caret(), "web[1-\n      ^"; got != want {
		t.Errorf("Caret() = %q, want %q", got, want)
	}
	// Columns count characters; tabs are kept in the caret line.
	_, err = Expand("né[a]")
	errors.As(err, &e)
	if !strings.HasSuffix(err.Error(), "at column 4") {
		t.Errorf("got %v, want column 4", err)
	}
	if got, want := e.Caret(), "né[a]\n   ^"; got != want {
		t.Errorf("Caret() = %q, want %q", got, want)
	}
	_, err = Expand("a\tb]")
	errors.As(err, &e)
	if got, want := err.Error(), `hostlist: "a\tb]": unbalanced ']' (no matching '[') at column 4`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got, want := e.Caret(), "a\tb]\n \t ^"; got != want {
		t.Errorf("Caret() = %q, want %q", got, want)
	}
}

func TestMaxHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("expands a million names")
	}
	got, err := Expand("h[1-1024]x[0001-1024]")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxHosts || got[0] != "h1x0001" || got[MaxHosts-1] != "h1024x1024" {
		t.Errorf("got %d names, %q … %q", len(got), got[0], got[len(got)-1])
	}
}

func TestExpandAll(t *testing.T) {
	tests := []struct {
		include, exclude []string
		want             []string
	}{
		// pdsh(1): pdsh -w foo[0-5] -x foo[1-3]
		{[]string{"foo[0-5]"}, []string{"foo[1-3]"}, []string{"foo0", "foo4", "foo5"}},
		{[]string{"web[1-3]", "web2,db1"}, nil, []string{"web1", "web2", "web3", "db1"}},
		{[]string{"web[1-2],db1"}, []string{"web*"}, []string{"db1"}},
		{[]string{"web1", "web10"}, []string{"web?"}, []string{"web10"}},
		{[]string{"rack[1-3]-n[1-2]"}, []string{"rack[1-2]-*"}, []string{"rack3-n1", "rack3-n2"}},
		{[]string{"web[1-3]"}, []string{"web1", "web3,db9"}, []string{"web2"}},
		{[]string{"web[1-3]"}, []string{"*"}, []string{}},
		{[]string{"web[1-3]"}, []string{"", " , "}, seq("web", 1, 3, 1, "")},
		{nil, []string{"web1"}, nil},
		{nil, nil, nil},
	}
	for _, tt := range tests {
		got, err := ExpandAll(tt.include, tt.exclude)
		if err != nil {
			t.Errorf("ExpandAll(%q, %q): %v", tt.include, tt.exclude, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ExpandAll(%q, %q) = %q, want %q", tt.include, tt.exclude, got, tt.want)
		}
	}
}

func TestExpandAllErrors(t *testing.T) {
	tests := []struct {
		include, exclude []string
		msg              string
	}{
		{[]string{"web1", "web[1-"}, nil, "hostlist: web[1-: unexpected end of expression at column 7"},
		{[]string{"web1"}, []string{"web[a]"}, "hostlist: web[a]: non-numeric"},
		{[]string{"web1"}, []string{`web\`}, `hostlist: exclude pattern "web\\": syntax error in pattern`},
		{[]string{"a[1-1048576]", "b"}, nil, "hostlist: b: expressions together expand to more than 1048576 hosts at column 1"},
		{[]string{"a"}, []string{"a[1-1048576]", "b*"}, "more than 1048576 hosts"},
	}
	for _, tt := range tests {
		got, err := ExpandAll(tt.include, tt.exclude)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ExpandAll(%q, %q) = %q, %v; want error containing %q", tt.include, tt.exclude, got, err, tt.msg)
		}
	}
}

func TestReadFile(t *testing.T) {
	const file = "\uFEFF# cluster A\n" +
		"web[01-03]\n" +
		"\n" +
		"   db1   # primary\r\n" +
		"\t# indented comment\n" +
		"root@gw1 gw2\n" +
		"#web9\n" +
		"last"
	got, err := ReadFile(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"web[01-03]", "db1", "root@gw1 gw2", "last"}
	if !slices.Equal(got, want) {
		t.Errorf("ReadFile = %q, want %q", got, want)
	}
	hosts, err := ExpandAll(got, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"web01", "web02", "web03", "db1", "root@gw1", "gw2", "last"}; !slices.Equal(hosts, want) {
		t.Errorf("expanded %q, want %q", hosts, want)
	}

	got, err = ReadFile(strings.NewReader(""))
	if err != nil || len(got) != 0 {
		t.Errorf("empty file: %q, %v", got, err)
	}
}

func TestReadFileErrors(t *testing.T) {
	_, err := ReadFile(strings.NewReader("web1\n# ok\n  web[1- # comment\nweb2\n"))
	var e *Error
	if !errors.As(err, &e) || e.Line != 3 || e.Pos != 6 || e.Expr != "web[1-" {
		t.Fatalf("got %#v", err)
	}
	if got, want := err.Error(), "hostlist: line 3: web[1-: unexpected end of expression at column 7"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}

	_, err = ReadFile(strings.NewReader("web1\n" + strings.Repeat("x", maxLine+1) + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2: line longer than") {
		t.Errorf("long line: got %v", err)
	}

	boom := errors.New("boom")
	_, err = ReadFile(iotest.ErrReader(boom))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "reading line 1") {
		t.Errorf("read error: got %v", err)
	}
}

func TestCompress(t *testing.T) {
	tests := []struct {
		hosts []string
		want  string
	}{
		{[]string{"web1", "web2", "web3", "web5", "db1"}, "db1,web[1-3,5]"},
		{[]string{"web01", "web02"}, "web[01-02]"},
		{[]string{"web1", "web01"}, "web[1,01]"},
		{[]string{"web08", "web09", "web10", "web11"}, "web[08-11]"},
		{[]string{"web9", "web10", "web11"}, "web[9-11]"},
		{[]string{"web1", "web2", "web08", "web09", "web10"}, "web[1-2,08-10]"},
		{[]string{"web008", "web009", "web10"}, "web[10,008-009]"},
		{[]string{"n0", "n1", "n00"}, "n[0-1,00]"},
		{[]string{"web2", "web1", "web2", ""}, "web[1-2]"},
		{[]string{"a"}, "a"},
		{[]string{"a", "b", "a1"}, "a,a1,b"},
		{nil, ""},
		{[]string{"rack1-node01", "rack1-node02", "rack1-node03", "rack2-node01", "rack2-node02", "rack2-node03"}, "rack[1-2]-node[01-03]"},
		{[]string{"n1c1", "n1c2", "n2c1"}, "n1c[1-2],n2c1"},
		{[]string{"da2c1", "da2c2", "da3c1", "da3c2"}, "da[2-3]c[1-2]"},
		{[]string{"foo0-eth0", "foo1-eth0", "foo2-eth0", "foo3-eth0", "foo1-eth1"}, "foo1-eth1,foo[0-3]-eth0"},
		{[]string{"10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"}, "10.0.[0-1].[1-2]"},
		{[]string{"n10", "n2x", "n9"}, "n2x,n[9-10]"},
		{[]string{"n1", "m1", "n3"}, "m1,n[1,3]"},
		{[]string{"root@web1", "root@web2", "web1"}, "root@web[1-2],web1"},
		{[]string{"n1234567890123456789012", "n1234567890123456789013"}, "n1234567890123456789012,n1234567890123456789013"},
		{[]string{"x999999999999999998", "x999999999999999999"}, "x[999999999999999998-999999999999999999]"},
		{[]string{strings.Repeat("a1", 33), strings.Repeat("a1", 32) + "a2"}, strings.Repeat("a1", 33) + "," + strings.Repeat("a1", 32) + "a2"},
		{[]string{strings.Repeat("a1", 31) + "a2", strings.Repeat("a1", 32)}, strings.Repeat("a1", 31) + "a[1-2]"},
	}
	for _, tt := range tests {
		if got := Compress(tt.hosts); got != tt.want {
			t.Errorf("Compress(%q) = %q, want %q", tt.hosts, got, tt.want)
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// checkRoundTrip checks that Compress(names) expands back to names, and
// that Compress is deterministic and idempotent.
func checkRoundTrip(t *testing.T, names []string) {
	t.Helper()
	c := Compress(names)
	back, err := Expand(c)
	if err != nil {
		t.Fatalf("Compress(%q) = %q, which does not expand: %v", names, c, err)
	}
	if !sameSet(back, names) {
		t.Fatalf("Compress(%q) = %q, which expands to %q", names, c, back)
	}
	if c2 := Compress(back); c2 != c {
		t.Fatalf("Compress not idempotent: %q then %q", c, c2)
	}
	shuffled := slices.Clone(names)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if c3 := Compress(shuffled); c3 != c {
		t.Fatalf("Compress depends on order: %q and %q", c, c3)
	}
}

func TestCompressRoundTrip(t *testing.T) {
	for _, tt := range expandTests {
		checkRoundTrip(t, tt.want)
	}
	for _, expr := range []string{
		"web[1-3,5],db1",
		"web[1,01,001,0001]",
		"n[0-100/7],n[05-15],n[001-020/3]",
		"rack[1-4]-node[01-16],rack5-node[01-08],gw[1-2]",
		"a[1-3]b[1-3]c[1-3],a2b2c4",
		"x[8-12],x[08-12],x[008-012]",
		"10.0.[0-3].[1-254]",
		"n[9-11]x[09-11]",
	} {
		names, err := Expand(expr)
		if err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, names)
	}
	// Random name sets over a small alphabet exercise padding and
	// multi-dimensional folding.
	r := rand.New(rand.NewPCG(1, 2))
	parts := []string{"n", "0", "1", "9", "10", "01", "-", "x", "00", "2", "099", "100"}
	for range 500 {
		var names []string
		for range r.IntN(30) {
			var b strings.Builder
			for range 1 + r.IntN(5) {
				b.WriteString(parts[r.IntN(len(parts))])
			}
			names = append(names, b.String())
		}
		checkRoundTrip(t, names)
	}
}

func TestNaturalCompare(t *testing.T) {
	sorted := []string{"", "1", "01", "2", "10", "a", "a1", "a1b", "a01", "a2", "a10", "b"}
	for i := range sorted {
		for j := range sorted {
			c := naturalCompare(sorted[i], sorted[j])
			if (i < j && c >= 0) || (i == j && c != 0) || (i > j && c <= 0) {
				t.Errorf("naturalCompare(%q, %q) = %d", sorted[i], sorted[j], c)
			}
		}
	}
}

// FuzzExpand checks that Expand never panics, that its errors point into
// the expression, that names are non-empty and distinct, that parse's
// size accounting is exact, and that Compress round-trips.
func FuzzExpand(f *testing.F) {
	for _, tt := range expandTests {
		f.Add(tt.expr)
	}
	for _, tt := range errorTests {
		f.Add(tt.expr)
	}
	f.Add("rack[1-4]-node[01-16],rack5-node[01-08]")
	f.Add("n[0-100/7],n[05-15]")
	f.Fuzz(func(t *testing.T, expr string) {
		elems, count, size, perr := parse(expr)
		if perr == nil && (count > 1<<16 || size > 1<<22) {
			return // valid but slow to expand; TestMaxHosts covers the limit
		}
		names, err := Expand(expr)
		if (err == nil) != (perr == nil) {
			t.Fatalf("parse and Expand disagree: %v, %v", perr, err)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if e.Expr != expr || e.Pos < 0 || e.Pos > len(expr) || e.Msg == "" {
				t.Fatalf("bad error %#v", e)
			}
			if strings.Contains(e.Error(), "\n") {
				t.Fatalf("multi-line error %q", e.Error())
			}
			return
		}
		if count > MaxHosts || size > maxBytes {
			t.Fatalf("limits exceeded: %d names, %d bytes", count, size)
		}
		all := generate(elems, count, size)
		total := 0
		for _, n := range all {
			total += len(n)
		}
		if len(all) != count || total != size {
			t.Fatalf("parse predicted %d names and %d bytes, got %d and %d", count, size, len(all), total)
		}
		seen := make(map[string]bool, len(names))
		for _, n := range names {
			if n == "" {
				t.Fatalf("empty name in %q", names)
			}
			if seen[n] {
				t.Fatalf("duplicate name %q", n)
			}
			seen[n] = true
		}
		c := Compress(names)
		back, err := Expand(c)
		if err != nil {
			t.Fatalf("Compress(Expand(%q)) = %q, which does not expand: %v", expr, c, err)
		}
		if !sameSet(back, names) {
			t.Fatalf("Compress(Expand(%q)) = %q, which expands to %q, not %q", expr, c, back, names)
		}
		if c2 := Compress(back); c2 != c {
			t.Fatalf("Compress not idempotent: %q then %q", c, c2)
		}
	})
}
