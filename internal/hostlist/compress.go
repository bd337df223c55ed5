package hostlist

import (
	"cmp"
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
	// Names fold together only if they have the same shape: the same
	// literal text around the same number of digit runs.
	type shape struct {
		lits []string   // literal text around the digit runs
		nums [][]string // the digit runs of each name
	}
	seen := make(map[string]struct{}, len(hosts))
	shapes := make(map[string]*shape)
	var order []string
	var out []string
	for _, h := range hosts {
		if _, dup := seen[h]; dup || h == "" {
			continue
		}
		seen[h] = struct{}{}
		if len(h) > maxFoldLen || strings.IndexByte(h, 0) >= 0 {
			out = append(out, h) // not a host name; don't spend time on it
			continue
		}
		lits, nums := splitDigits(h)
		if len(nums) == 0 || len(nums) > maxFoldRuns {
			out = append(out, h)
			continue
		}
		key := strings.Join(lits, "\x00")
		sh := shapes[key]
		if sh == nil {
			sh = &shape{lits: lits}
			shapes[key] = sh
			order = append(order, key)
		}
		sh.nums = append(sh.nums, nums)
	}
	for _, key := range order {
		sh := shapes[key]
		// Runs that are the same in every name need no folding.
		var vary []int
		for k := range sh.lits[1:] {
			for _, n := range sh.nums[1:] {
				if n[k] != sh.nums[0][k] {
					vary = append(vary, k)
					break
				}
			}
		}
		best := fold(sh.lits, sh.nums, vary, true)
		if len(vary) > 1 && len(best) > 1 {
			if alt := fold(sh.lits, sh.nums, vary, false); shorter(alt, best) {
				best = alt
			}
		}
		out = append(out, best...)
	}
	slices.SortFunc(out, naturalCompare)
	return strings.Join(out, ",")
}

// splitDigits splits s around its maximal runs of at most maxDigits
// digits: s is lits[0] + nums[0] + lits[1] + … + lits[len(nums)]. Longer
// runs stay in the literal text.
func splitDigits(s string) (lits, nums []string) {
	lit := 0
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		j := i + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j-i <= maxDigits {
			lits = append(lits, s[lit:i])
			nums = append(nums, s[i:j])
			lit = j
		}
		i = j
	}
	return append(lits, s[lit:]), nums
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

// fold folds distinct names of one shape, given as their digit runs, one
// run at a time: the runs listed in vary, last first when fromRight. Each
// round merges the names or groups that agree on every other run (by
// now either a number or a folded range list) into one group.
func fold(lits []string, nums [][]string, vary []int, fromRight bool) []string {
	items := make([][]string, len(nums))
	for i, n := range nums {
		items[i] = slices.Clone(n)
	}
	var key strings.Builder
	for r := range vary {
		k := vary[r]
		if fromRight {
			k = vary[len(vary)-1-r]
		}
		index := make(map[string]int)
		var next [][]string
		var members [][]string
		for _, cells := range items {
			key.Reset()
			for _, o := range vary {
				if o != k {
					key.WriteString(cells[o])
					key.WriteByte('|')
				}
			}
			g, ok := index[key.String()]
			if !ok {
				g = len(next)
				index[key.String()] = g
				next = append(next, cells)
				members = append(members, nil)
			}
			members[g] = append(members[g], cells[k])
		}
		for g, cells := range next {
			cells[k] = foldNumbers(members[g])
		}
		items = next
	}
	out := make([]string, 0, len(items))
	var b strings.Builder
	for _, cells := range items {
		b.Reset()
		for k, c := range cells {
			b.WriteString(lits[k])
			b.WriteString(c)
		}
		b.WriteString(lits[len(cells)])
		out = append(out, b.String())
	}
	return out
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
		return cmp.Or(cmp.Compare(a.v, b.v), strings.Compare(a.s, b.s))
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
		return cmp.Or(cmp.Compare(a.w, b.w), cmp.Compare(a.lo, b.lo))
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
