package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// JSON in, CBOR out (call's data) and CBOR in, JSON out (call's result).
//
// The data is decoded from JSON into plain values (objects, arrays,
// strings, numbers, booleans, null) and encoded as CBOR; the function's
// side decodes that into its typed input. CBOR decoding into a Go struct
// matches map keys to field names (or `cbor:` tag names) exactly first and
// then case-insensitively, so {"path": "/etc"} fills a field Path. Integers
// in JSON become CBOR integers and fit any integer or float field; numbers
// with a fraction or exponent become floats, which CBOR does not decode
// into integer fields. Structs with integer keys (`cbor:"1,keyasint"`) or
// toarray encoding cannot be written in JSON.

// jsonToCBOR converts a JSON document to CBOR.
func jsonToCBOR(data []byte) (cbor.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("data is not JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("data is not one JSON value: something follows it")
	}
	v, err := numbers(v)
	if err != nil {
		return nil, err
	}
	b, err := cborEnc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode data as CBOR: %w", err)
	}
	return b, nil
}

var cborEnc = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// numbers replaces json.Number with int64, uint64, a big integer or
// float64.
func numbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		if bi, ok := new(big.Int).SetString(s, 10); ok {
			return bi, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s: %w", s, err)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	case []any:
		for i, e := range x {
			n, err := numbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	}
	return v, nil
}

// cborDec decodes a function's result for JSON, under the same limits as
// the protocol. Maps decode as map[any]any (not DefaultMapType
// map[string]any, which fails on the integer keys of `keyasint` structs
// such as agent.ExecOut); jsonable then writes every key as a string.
var cborDec = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		MaxNestedLevels:  64,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 17,
		IndefLength:      cbor.IndefLengthAllowed,
		BigIntDec:        cbor.BigIntDecodeValue,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// cborToJSON converts a function's CBOR result to compact JSON. Maps are
// decoded with any keys and their keys written as strings, so that
// results of structs with integer keys still print; byte strings become
// base64 strings, as encoding/json writes []byte; NaN and infinities
// become strings.
func cborToJSON(data []byte) (json.RawMessage, error) {
	if len(data) == 0 {
		return json.RawMessage("null"), nil
	}
	var v any
	if err := cborDec.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	b, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, fmt.Errorf("result as JSON: %w", err)
	}
	return b, nil
}

// jsonable turns a decoded CBOR value into one encoding/json writes.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			var ks string
			switch kk := k.(type) {
			case string:
				ks = kk
			case []byte:
				ks = base64.StdEncoding.EncodeToString(kk)
			default:
				ks = fmt.Sprint(kk)
			}
			m[ks] = jsonable(e)
		}
		return m
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Sprint(x)
		}
		return x
	case float32:
		return jsonable(float64(x))
	case big.Int:
		return &x
	case cbor.Tag:
		return map[string]any{"tag": x.Number, "value": jsonable(x.Content)}
	case cbor.SimpleValue:
		return uint8(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}
