package wire

import "encoding/binary"

// bigData is the size from which EncodeData and DecodeData pass a []byte's
// bytes through instead of copying them: below it a copy is cheaper than
// the bookkeeping.
const bigData = 4 << 10

// EncodeData encodes v, a job's input or output, as CBOR in up to two
// pieces whose concatenation is the encoding. A large []byte is encoded as a
// byte-string header and the slice itself, which is not copied: it must not
// change until the pieces have been written.
func EncodeData(v any) (head, tail []byte, err error) {
	if b, ok := v.([]byte); ok && len(b) >= bigData {
		return appendByteStringHeader(nil, len(b)), b, nil
	}
	head, err = encMode.Marshal(v)
	return head, nil, err
}

// DecodeData decodes a job's CBOR-encoded input or output into v, as
// Unmarshal does, except that a large byte string decoded into a *[]byte
// aliases data rather than being copied out of it.
func DecodeData(data []byte, v any) error {
	if p, ok := v.(*[]byte); ok && len(data) >= bigData {
		if b, ok := byteString(data); ok {
			*p = b
			return nil
		}
	}
	return decMode.Unmarshal(data, v)
}

// appendByteStringHeader appends the header of a definite-length CBOR byte
// string of n bytes, in its shortest form.
func appendByteStringHeader(dst []byte, n int) []byte {
	const major = 2 << 5
	switch {
	case n < 24:
		return append(dst, major|byte(n))
	case n <= 0xff:
		return append(dst, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, major|25), uint16(n))
	case uint64(n) <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(dst, major|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, major|27), uint64(n))
}

// byteString returns the contents of data when data is exactly one
// definite-length CBOR byte string.
func byteString(data []byte) ([]byte, bool) {
	if len(data) == 0 || data[0]>>5 != 2 {
		return nil, false
	}
	var n uint64
	var hdr int
	switch info := data[0] & 0x1f; {
	case info < 24:
		n, hdr = uint64(info), 1
	case info == 24 && len(data) >= 2:
		n, hdr = uint64(data[1]), 2
	case info == 25 && len(data) >= 3:
		n, hdr = uint64(binary.BigEndian.Uint16(data[1:])), 3
	case info == 26 && len(data) >= 5:
		n, hdr = uint64(binary.BigEndian.Uint32(data[1:])), 5
	case info == 27 && len(data) >= 9:
		n, hdr = binary.BigEndian.Uint64(data[1:]), 9
	default:
		return nil, false // indefinite length, reserved, or short
	}
	if n != uint64(len(data)-hdr) {
		return nil, false
	}
	return data[hdr:len(data):len(data)], true
}
