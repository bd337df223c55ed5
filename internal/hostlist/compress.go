package hostlist

import (
	"slices"
	"strconv"
	"strings"
)

// Limits beyond which Compress does not try to fold a name.
const (
	maxFoldLen  = 1 << 10
	maxFoldRuns = 32
)

// Compress folds host names into a short expression, the inverse of
// Expand used for grouped output (dshbak -c, clush -b headers). Names
// that differ only in a run of digits are folded into a bracketed range
// list, e.g. web1 web2 web3 web5 db1 gives "db1,web[1-3,5]". Names with
// several digit runs are folded one run at a time, either from the last
// run to the first or the other way round, whichever gives the shorter
// result, so rack1-node01 … rack2-node03 gives "rack[1-2]-node[01-03]".
// Zero padding is preserved: web01 web02 gives "web[01-02]", and web1
// web01 stay apart as "web[1,01]". Runs of more than 18 digits are not
// folded, and names longer than 1 KiB or with more than 32 digit runs
// are listed as they are.
//
// The result is sorted (digit runs compare numerically) and depends only
// on the set of names: order and duplicates in hosts do not matter, and
// empty names are ignored. For names produced by Expand, Expand of the
// result yields the same set of names. Names containing expression
// syntax (',', '[', ']', whitespace) are not escaped.
func Compress(hosts []string) string {
	// Names fold together only if they have the same skeleton: the same
	// text outside their digit runs.
	seen := make(map[string]struct{}, len(hosts))
	var out []string
	shapes := make(map[string][]string)
	var order []string
	for _, h := range hosts {
		if _, dup := seen[h]; dup || h == "" {
			continue
		}
		seen[h] = struct{}{}
		k, runs := skeleton(h)
		if len(h) > maxFoldLen || runs > maxFoldRuns {
			out = append(out, h) // absurd for a host name; don't spend time on it
			continue
		}
		if _, ok := shapes[k]; !ok {
			order = append(order, k)
		}
		shapes[k] = append(shapes[k], h)
	}
	for _, k := range order {
		names := shapes[k]
		best := fold(names, false)
		if _, runs := skeleton(names[0]); runs > 1 {
			if alt := fold(names, true); shorter(alt, best) {
				best = alt
			}
		}
		out = append(out, best...)
	}
	slices.SortFunc(out, naturalCompare)
	return strings.Join(out, ",")
}

// skeleton returns s with every run of digits replaced by a NUL byte, and
// the number of runs.
func skeleton(s string) (string, int) {
	var b strings.Builder
	runs := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			b.WriteByte(s[i])
			continue
		}
		if i == 0 || !isDigit(s[i-1]) {
			b.WriteByte(0)
			runs++
		}
	}
	return b.String(), runs
}

// shorter reports whether folding a is better than folding b: fewer
// groups, then fewer bytes.
func shorter(a, b []string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	la, lb := 0, 0
	for _, s := range a {
		la += len(s)
	}
	for _, s := range b {
		lb += len(s)
	}
	return la < lb
}

// fold folds distinct names one digit run at a time, from the first run
// to the last (fromLeft) or from the last to the first. Each item keeps
// the part of a name still to fold (rest) and the part already folded
// and rendered (done, after rest or, when fromLeft, before it). Each
// round folds the next digit run of rest among the items that agree on
// everything else.
func fold(names []string, fromLeft bool) []string {
	type item struct{ done, rest string }
	type key struct{ pre, post string }
	items := make([]item, len(names))
	for i, n := range names {
		items[i] = item{rest: n}
	}
	var out []string
	for len(items) > 0 {
		groups := make(map[key][]string)
		var keys []key
		for _, it := range items {
			var i, j int
			if fromLeft {
				i, j = firstDigitRun(it.rest)
			} else {
				i, j = lastDigitRun(it.rest)
			}
			if i < 0 || j-i > maxDigits {
				if fromLeft {
					out = append(out, it.done+it.rest)
				} else {
					out = append(out, it.rest+it.done)
				}
				continue
			}
			var k key
			if fromLeft {
				k = key{pre: it.done + it.rest[:i], post: it.rest[j:]}
			} else {
				k = key{pre: it.rest[:i], post: it.rest[j:] + it.done}
			}
			if _, ok := groups[k]; !ok {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], it.rest[i:j])
		}
		items = items[:0]
		for _, k := range keys {
			f := foldNumbers(groups[k])
			if fromLeft {
				items = append(items, item{done: k.pre + f, rest: k.post})
			} else {
				items = append(items, item{rest: k.pre, done: f + k.post})
			}
		}
	}
	return out
}

// firstDigitRun returns the bounds of the first run of ASCII digits in s,
// or -1, -1.
func firstDigitRun(s string) (int, int) {
	i := 0
	for i < len(s) && !isDigit(s[i]) {
		i++
	}
	if i == len(s) {
		return -1, -1
	}
	j := i + 1
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	return i, j
}

// lastDigitRun returns the bounds of the last run of ASCII digits in s,
// or -1, -1.
func lastDigitRun(s string) (int, int) {
	j := len(s)
	for j > 0 && !isDigit(s[j-1]) {
		j--
	}
	if j == 0 {
		return -1, -1
	}
	i := j - 1
	for i > 0 && isDigit(s[i-1]) {
		i--
	}
	return i, j
}

// foldNumbers renders distinct digit strings (at most maxDigits long) as
// a range list that Expand turns back into exactly those strings: a bare
// number when there is one, else "[a-b,c,...]".
func foldNumbers(strs []string) string {
	if len(strs) == 1 {
		return strs[0]
	}
	type num struct {
		v uint64
		s string
	}
	nums := make([]num, 0, len(strs))
	for _, s := range strs {
		v, _ := strconv.ParseUint(s, 10, 64)
		nums = append(nums, num{v, s})
	}
	slices.SortFunc(nums, func(a, b num) int {
		if a.v != b.v {
			if a.v < b.v {
				return -1
			}
			return 1
		}
		return strings.Compare(a.s, b.s)
	})
	nums = slices.CompactFunc(nums, func(a, b num) bool { return a.s == b.s })

	// Put every number in a padding class: the width its range's lower
	// bound is printed with. A number with a leading zero needs exactly
	// its own width. One without (or "0") prints correctly at any width
	// up to its length; it joins a class whose run it continues, else the
	// unpadded class 1. Numbers arrive in ascending order, so every class
	// is strictly ascending.
	classes := make(map[int][]uint64)
	for _, n := range nums {
		w := 0
		if len(n.s) > 1 && n.s[0] == '0' {
			w = len(n.s)
		} else {
			for c := 1; c <= len(n.s) && n.v > 0; c++ {
				if vs := classes[c]; len(vs) > 0 && vs[len(vs)-1] == n.v-1 {
					w = c
					break
				}
			}
			if w == 0 {
				w = 1
			}
		}
		classes[w] = append(classes[w], n.v)
	}
	type run struct {
		lo, hi uint64
		w      int
	}
	var runs []run
	for w, vs := range classes {
		for i := 0; i < len(vs); {
			j := i
			for j+1 < len(vs) && vs[j+1] == vs[j]+1 {
				j++
			}
			runs = append(runs, run{vs[i], vs[j], w})
			i = j + 1
		}
	}
	// Unpadded runs first, then by padding width, each in numeric order.
	slices.SortFunc(runs, func(a, b run) int {
		if a.w != b.w {
			return a.w - b.w
		}
		if a.lo < b.lo {
			return -1
		}
		return 1
	})
	var b strings.Builder
	b.WriteByte('[')
	for i, r := range runs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pad(r.lo, r.w))
		if r.hi != r.lo {
			b.WriteByte('-')
			b.WriteString(pad(r.hi, r.w))
		}
	}
	b.WriteByte(']')
	return b.String()
}

// naturalCompare orders strings comparing runs of digits by numeric
// value ("n2" before "n10"); it returns 0 only for equal strings.
func naturalCompare(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if isDigit(a[i]) && isDigit(b[j]) {
			si, sj := i, j
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			da := strings.TrimLeft(a[si:i], "0")
			db := strings.TrimLeft(b[sj:j], "0")
			if len(da) != len(db) {
				return len(da) - len(db)
			}
			if c := strings.Compare(da, db); c != 0 {
				return c
			}
			if (i - si) != (j - sj) { // same value, fewer leading zeros first
				return (i - si) - (j - sj)
			}
			continue
		}
		if a[i] != b[j] {
			return int(a[i]) - int(b[j])
		}
		i++
		j++
	}
	if c := (len(a) - i) - (len(b) - j); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}
