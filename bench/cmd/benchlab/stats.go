package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Stat summarises the samples of one variant, in the figure's unit.
type Stat struct {
	N      int      `json:"n"`
	Min    float64  `json:"min"`
	Median float64  `json:"median"`
	Max    float64  `json:"max"`
	P99    *float64 `json:"p99,omitempty"`
}

// summarize computes min, median and max (and p99 when withP99) of v.
func summarize(v []float64, withP99 bool) *Stat {
	if len(v) == 0 {
		return nil
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	st := &Stat{N: len(s), Min: s[0], Max: s[len(s)-1], Median: quantile(s, 0.5)}
	if withP99 {
		p := quantile(s, 0.99)
		st.P99 = &p
	}
	return st
}

// quantile returns the q-quantile of sorted s (nearest rank, interpolated
// for the median of an even count).
func quantile(s []float64, q float64) float64 {
	if q == 0.5 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Variant is one way of doing the measured thing: OpenSSH's, toworker's, or
// a reference.
type Variant struct {
	Name string `json:"name"`
	// Role is "baseline" (the figure's ratio is against it), "toworker"
	// (the figure's subject) or "reference" (reported only).
	Role string `json:"role"`
	Stat *Stat  `json:"stat,omitempty"`
	Note string `json:"note,omitempty"`
}

// Check is one condition of a target: What ("ratio", "median", "p99") Op
// ("<=" or ">=") Value.
type Check struct {
	What  string  `json:"what"`
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

// Figure is one measurement: its variants, the ratio of the toworker
// variant's median to the baseline's, the target and whether it was met.
type Figure struct {
	ID       string         `json:"id"`
	Title    string         `json:"title"`
	Unit     string         `json:"unit"`
	Variants []Variant      `json:"variants"`
	Ratio    *float64       `json:"ratio,omitempty"`
	Target   string         `json:"target"`
	Checks   []Check        `json:"checks,omitempty"`
	Result   string         `json:"result"` // pass, miss, reported, skipped, error
	Note     string         `json:"note,omitempty"`
	Extra    map[string]any `json:"extra,omitempty"`
	Section  string         `json:"section"`
	higher   bool           // a larger value is better (throughput)
	errored  bool
}

func (f *Figure) variant(role string) *Variant {
	for i := range f.Variants {
		if f.Variants[i].Role == role {
			return &f.Variants[i]
		}
	}
	return nil
}

// evaluate computes the ratio and the result from the variants and checks.
func (f *Figure) evaluate() {
	if f.errored {
		f.Result = "error"
		return
	}
	tw, base := f.variant("toworker"), f.variant("baseline")
	if tw != nil && tw.Stat != nil && base != nil && base.Stat != nil && base.Stat.Median != 0 {
		r := tw.Stat.Median / base.Stat.Median
		f.Ratio = &r
	}
	if f.Result == "skipped" {
		return
	}
	if len(f.Checks) == 0 {
		f.Result = "reported"
		return
	}
	if tw == nil || tw.Stat == nil {
		f.Result = "skipped"
		return
	}
	f.Result = "pass"
	for _, c := range f.Checks {
		var v float64
		switch c.What {
		case "ratio":
			if f.Ratio == nil {
				f.Result = "skipped"
				return
			}
			v = *f.Ratio
		case "median":
			v = tw.Stat.Median
		case "p99":
			if tw.Stat.P99 == nil {
				continue
			}
			v = *tw.Stat.P99
		}
		ok := v <= c.Value
		if c.Op == ">=" {
			ok = v >= c.Value
		}
		if !ok {
			f.Result = "miss"
		}
	}
}

// fmtVal formats a value of the given unit for the table.
func fmtVal(v float64, unit string) string {
	switch {
	case unit == "calls/s":
		return fmt.Sprintf("%.0f", v)
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
