package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/wire"
)

func TestCall(t *testing.T) {
	// Keys in any case fill the plain-named fields; nested structs too.
	r := cli(t, "call", "-H", "h[1-2]", "test.sum", `{"words": ["a", "b"], "N": 3, "SCALE": 1.25, "inner": {"flag": true}}`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := `{"Count":5,"Flag":true,"Joined":"a+b","Scaled":2.5}`
	for _, h := range []string{"h1", "h2"} {
		if !has(r.stdout, h+": "+want) {
			t.Errorf("stdout lacks %s's result %s:\n%s", h, want, r.stdout)
		}
		if !has(r.stdout, h+": summing 2") {
			t.Errorf("stdout lacks %s's output:\n%s", h, r.stdout)
		}
	}

	// -N: the bare result, for jq.
	r = cli(t, "call", "-N", "-q", "-H", "h1", "test.sum", `{"Words": ["x"]}`)
	if r.stdout != "summing 1\n"+`{"Count":1,"Flag":false,"Joined":"x","Scaled":0}`+"\n" {
		t.Errorf("-N: %q", r.stdout)
	}

	// Data from stdin and from a file; no data at all.
	r = cliCtx(t, t.Context(), strings.NewReader(`{"N": 7}`), "call", "--json", "-H", "h1", "test.sum", "-")
	rec := finalRecords(t, r.stdout)["h1"]
	if r.code != 0 || rec.Status != statusOK || !bytes.Contains(rec.Result, []byte(`"Count":7`)) || rec.ExitCode != nil {
		t.Errorf("stdin data: exit %d record %+v", r.code, rec)
	}
	file := filepath.Join(t.TempDir(), "data.json")
	os.WriteFile(file, []byte(`{"N": 2}`), 0o644)
	r = cli(t, "call", "-q", "-N", "-H", "h1", "test.sum", "@"+file)
	if !strings.Contains(r.stdout, `"Count":2`) {
		t.Errorf("@file: %q", r.stdout)
	}
	r = cli(t, "call", "-q", "-N", "-H", "h1", "test.sum")
	if !strings.Contains(r.stdout, `"Count":0`) {
		t.Errorf("no data: %q", r.stdout)
	}

	// The function's error: exit 1, the message in the summary.
	r = cli(t, "call", "-H", "h1", "test.boom", `"it broke"`)
	if r.code != ExitFailed || !strings.Contains(r.stderr, "h1: it broke") {
		t.Errorf("function error: exit %d stderr %q", r.code, r.stderr)
	}
	// An unknown function, and data of the wrong type.
	r = cli(t, "call", "-H", "h1", "test.nosuch")
	if r.code != ExitFailed || !strings.Contains(r.stderr, "unknown-function") {
		t.Errorf("unknown function: exit %d stderr %q", r.code, r.stderr)
	}
	r = cli(t, "call", "-H", "h1", "test.sum", `{"N": 1.5}`)
	if r.code != ExitFailed || !strings.Contains(r.stderr, "decode") {
		t.Errorf("float into int: exit %d stderr %q", r.code, r.stderr)
	}

	// A built-in function whose output struct has integer keys still prints.
	r = cli(t, "call", "-q", "-N", "-H", "h1", "toworker.exec")
	if r.code != ExitFailed || !strings.Contains(r.stderr, "no command") {
		t.Errorf("exec with no data: exit %d stderr %q", r.code, r.stderr)
	}

	// Group mode groups identical results.
	r = cli(t, "call", "-b", "-H", "h[1-3]", "test.sum", `{"N": 1}`)
	if !strings.HasPrefix(r.stdout, "---------------\nh[1-3] (3)\n---------------\nsumming 0\n{") {
		t.Errorf("grouped call:\n%s", r.stdout)
	}
}

func TestFuncsCommand(t *testing.T) {
	r := cli(t, "funcs")
	for _, f := range []string{"test.sum", "toworker.exec", "toworker.get", "toworker.put"} {
		if !has(r.stdout, f) {
			t.Errorf("funcs lacks %s:\n%s", f, r.stdout)
		}
	}
}

func TestJSONToCBOR(t *testing.T) {
	data, err := jsonToCBOR([]byte(`{"words": ["a"], "n": 18446744073709551615, "scale": -2, "inner": {"FLAG": true}, "extra": null}`))
	if err != nil {
		t.Fatal(err)
	}
	var in struct {
		Words []string
		N     uint64
		Scale float64
		Inner struct{ Flag bool }
	}
	if err := wire.Unmarshal(data, &in); err != nil {
		t.Fatal(err)
	}
	if in.Words[0] != "a" || in.N != 18446744073709551615 || in.Scale != -2 || !in.Inner.Flag {
		t.Errorf("decoded %+v", in)
	}
	for _, bad := range []string{`{`, `{} {}`, `1e999`} {
		if _, err := jsonToCBOR([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	// Back: integer keys, byte strings, times, NaN.
	type keyed struct {
		A int       `cbor:"1,keyasint"`
		B []byte    `cbor:"2,keyasint"`
		T time.Time `cbor:"3,keyasint"`
	}
	raw, _ := wire.Marshal([]any{keyed{A: 1, B: []byte("hi"), T: time.Unix(0, 0).UTC()}, map[string]any{"nan": nanValue()}})
	js, err := cborToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	if back[0]["1"] != 1.0 || back[0]["2"] != "aGk=" || back[1]["nan"] != "NaN" {
		t.Errorf("result JSON %s", js)
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}
