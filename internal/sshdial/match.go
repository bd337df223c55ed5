package sshdial

import "strings"

// matchGlob reports whether s matches the ssh_config pattern pat, where '*'
// matches any run of characters and '?' exactly one character.
func matchGlob(s, pat string) bool {
	// Iterative matcher with single-star backtracking: linear in practice,
	// never exponential.
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pat) && pat[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(pat) && (pat[pi] == '?' || pat[pi] == s[si]):
			si++
			pi++
		case star >= 0:
			mark++
			si, pi = mark, star+1
		default:
			return false
		}
	}
	for pi < len(pat) && pat[pi] == '*' {
		pi++
	}
	return pi == len(pat)
}

// matchPatternList matches s against a comma-separated ssh pattern list (as
// in "Match host a,*.b,!c"): false if a negated pattern matches, otherwise
// true if any pattern matches. With lower, s and the patterns are compared
// in lower case (host names).
func matchPatternList(s, list string, lower bool) bool {
	if lower {
		s = strings.ToLower(s)
		list = strings.ToLower(list)
	}
	got := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if p == "" {
			continue
		}
		if matchGlob(s, p) {
			if neg {
				return false
			}
			got = true
		}
	}
	return got
}

// hostLineMatches applies ssh's Host line rule to whitespace-separated
// patterns: a matching negated pattern excludes the host, otherwise any
// matching pattern includes it.
func hostLineMatches(alias string, patterns []string) bool {
	got := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if matchGlob(alias, p) {
			if neg {
				return false
			}
			got = true
		}
	}
	return got
}
