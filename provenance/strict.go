package provenance

import (
	"errors"
	"fmt"
	"math"
)

// ErrNonCanonical is wrapped, with ErrMalformed, by Verify's error for an
// envelope that is not in the one encoding a record has (docs/envelope.md
// §3): a length or integer not in its shortest form, an indefinite length,
// a duplicate protected header label or an x5chain array of one
// certificate. Such an envelope may carry a valid signature, but its bytes,
// and so the hash that chains records, would not be unique.
var ErrNonCanonical = errors.New("not the canonical encoding")

// CBOR major types.
const (
	majorUint  = 0
	majorNeg   = 1
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
	majorTag   = 6
)

// maxProtectedLabels is the most labels a protected header may hold: alg,
// content type, kid, the signer's key and x5chain.
const maxProtectedLabels = 5

// cborReader reads CBOR heads and byte strings from b, accepting only
// definite lengths in their shortest form. It allocates nothing: strings
// are returned as slices of b, and nested items are read by the caller one
// head at a time, so no input can make it build a structure.
type cborReader struct {
	b   []byte
	off int
	// anyForm accepts a head whose argument is not in its shortest form
	// (the bundle's framing, which is not hashed); definite lengths are
	// still required.
	anyForm bool
}

// head reads one head: its major type and argument. what names the item for
// error messages.
func (r *cborReader) head(what string) (major byte, arg uint64, err error) {
	if r.off >= len(r.b) {
		return 0, 0, fmt.Errorf("%w: %s: unexpected end of data", ErrMalformed, what)
	}
	ib := r.b[r.off]
	r.off++
	major, ai := ib>>5, ib&0x1f
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai), nil
	case ai <= 27:
		n = 1 << (ai - 24)
	case ai == 31:
		return 0, 0, fmt.Errorf("%w: %w: %s: indefinite length or break", ErrMalformed, ErrNonCanonical, what)
	default:
		return 0, 0, fmt.Errorf("%w: %s: reserved additional information %d", ErrMalformed, what, ai)
	}
	if len(r.b)-r.off < n {
		return 0, 0, fmt.Errorf("%w: %s: unexpected end of data", ErrMalformed, what)
	}
	for _, c := range r.b[r.off : r.off+n] {
		arg = arg<<8 | uint64(c)
	}
	r.off += n
	// The shortest form: an argument below 24 in the initial byte, else the
	// fewest bytes that hold it.
	var min uint64
	switch n {
	case 1:
		min = 24
	case 2:
		min = 1 << 8
	case 4:
		min = 1 << 16
	case 8:
		min = 1 << 32
	}
	if arg < min && !r.anyForm {
		return 0, 0, fmt.Errorf("%w: %w: %s: argument %d not in its shortest form", ErrMalformed, ErrNonCanonical, what, arg)
	}
	return major, arg, nil
}

// expect reads a head of the given major type and returns its argument.
func (r *cborReader) expect(major byte, what string) (uint64, error) {
	m, arg, err := r.head(what)
	if err != nil {
		return 0, err
	}
	if m != major {
		return 0, fmt.Errorf("%w: %s: major type %d, want %d", ErrMalformed, what, m, major)
	}
	return arg, nil
}

// bytes reads a byte string of at most max bytes (max < 0: any length that
// fits the input) and returns it as a slice of the input.
func (r *cborReader) bytes(what string, max int) ([]byte, error) {
	n, err := r.expect(majorBytes, what)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.b)-r.off) {
		return nil, fmt.Errorf("%w: %s: %d bytes, only %d left", ErrMalformed, what, n, len(r.b)-r.off)
	}
	if max >= 0 && n > uint64(max) {
		return nil, fmt.Errorf("%w: %s: %d bytes, at most %d", ErrMalformed, what, n, max)
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

// integer reads a CBOR integer (major type 0 or 1) that fits an int64.
func (r *cborReader) integer(what string) (int64, error) {
	m, arg, err := r.head(what)
	if err != nil {
		return 0, err
	}
	if (m != majorUint && m != majorNeg) || arg > math.MaxInt64 {
		return 0, fmt.Errorf("%w: %s: not an integer in the int64 range", ErrMalformed, what)
	}
	if m == majorNeg {
		return -1 - int64(arg), nil
	}
	return int64(arg), nil
}

// sign1Parts are the fields of a COSE_Sign1, as slices of the envelope.
type sign1Parts struct {
	protected []byte // the serialised protected header map (the bstr's content)
	payload   []byte
	signature []byte
}

// splitSign1 reads a tagged COSE_Sign1 strictly (docs/envelope.md §3): tag
// 18, an array of 4, the protected header as a bstr, an empty unprotected
// map, the payload and the signature as bstrs, nothing after; every head in
// its shortest form. It allocates nothing.
func splitSign1(data []byte) (sign1Parts, error) {
	var p sign1Parts
	r := &cborReader{b: data}
	if tag, err := r.expect(majorTag, "COSE_Sign1 tag"); err != nil {
		return p, err
	} else if tag != 18 {
		return p, fmt.Errorf("%w: tag %d, want 18 (COSE_Sign1)", ErrMalformed, tag)
	}
	if n, err := r.expect(majorArray, "COSE_Sign1 array"); err != nil {
		return p, err
	} else if n != 4 {
		return p, fmt.Errorf("%w: COSE_Sign1 array of %d, want 4", ErrMalformed, n)
	}
	var err error
	if p.protected, err = r.bytes("protected header", -1); err != nil {
		return p, err
	}
	// The unprotected header is not signed: anything in it could be changed
	// in transit without breaking the signature, and would change the
	// envelope's hash. It must be empty.
	if n, err := r.expect(majorMap, "unprotected header"); err != nil {
		return p, err
	} else if n != 0 {
		return p, fmt.Errorf("%w: unprotected header is not empty", ErrMalformed)
	}
	if p.payload, err = r.bytes("payload (detached payloads are not used)", -1); err != nil {
		return p, err
	}
	if p.signature, err = r.bytes("signature", -1); err != nil {
		return p, err
	}
	if r.off != len(data) {
		return p, fmt.Errorf("%w: %d bytes after the COSE_Sign1", ErrMalformed, len(data)-r.off)
	}
	return p, nil
}

// checkProtected reads a serialised protected header strictly, before any
// general decoder sees it: a map of at most maxProtectedLabels integer
// labels, each known and present once (judged by value), alg an integer,
// content type a tstr, kid and the signer's key bstrs, and x5chain (only if
// allowChain) a bstr or an array of 2 to MaxChainCerts bstrs of at most
// MaxCertSize bytes; every head in its shortest form, nothing after the
// map. It allocates nothing.
func checkProtected(prot []byte, allowChain bool) error {
	r := &cborReader{b: prot}
	n, err := r.expect(majorMap, "protected header")
	if err != nil {
		return err
	}
	if n > maxProtectedLabels {
		return fmt.Errorf("%w: protected header has %d labels, at most %d", ErrMalformed, n, maxProtectedLabels)
	}
	var seen [maxProtectedLabels]int64
	for i := range int(n) {
		label, err := r.integer("protected header label")
		if err != nil {
			return err
		}
		for _, s := range seen[:i] {
			if s == label {
				return fmt.Errorf("%w: %w: protected header label %d twice", ErrMalformed, ErrNonCanonical, label)
			}
		}
		seen[i] = label
		what := fmt.Sprintf("protected header %d", label)
		switch label {
		case 1: // alg
			_, err = r.integer(what)
		case 3: // content type
			var n uint64
			if n, err = r.expect(majorText, what); err == nil {
				if n > uint64(len(r.b)-r.off) {
					return fmt.Errorf("%w: %s: %d bytes, only %d left", ErrMalformed, what, n, len(r.b)-r.off)
				}
				r.off += int(n)
			}
		case 4, HeaderLabelSPKI: // kid, signer key
			_, err = r.bytes(what, -1)
		case HeaderLabelX5Chain:
			if !allowChain {
				return fmt.Errorf("%w: unknown protected header %d", ErrMalformed, label)
			}
			err = checkX5Chain(r)
		default:
			return fmt.Errorf("%w: unknown protected header %d", ErrMalformed, label)
		}
		if err != nil {
			return err
		}
	}
	if r.off != len(prot) {
		return fmt.Errorf("%w: %d bytes after the protected header map", ErrMalformed, len(prot)-r.off)
	}
	return nil
}

// checkX5Chain reads an x5chain value: one certificate as a bstr, or 2 to
// MaxChainCerts as an array of bstr (RFC 9360: bstr / [2* bstr]), each of
// 1 to MaxCertSize bytes.
func checkX5Chain(r *cborReader) error {
	const what = "x5chain"
	start := r.off
	m, n, err := r.head(what)
	if err != nil {
		return err
	}
	switch m {
	case majorBytes:
		r.off = start // reread the head as a byte string's
		_, err := r.bytes(what, MaxCertSize)
		return err
	case majorArray:
		if n == 1 {
			return fmt.Errorf("%w: %w: x5chain is an array of one certificate (one is a bstr)", ErrMalformed, ErrNonCanonical)
		}
		if n < 2 || n > MaxChainCerts {
			return fmt.Errorf("%w: x5chain: %d certificates, want 1 to %d", ErrMalformed, n, MaxChainCerts)
		}
		for i := range int(n) {
			if _, err := r.bytes(fmt.Sprintf("x5chain certificate %d", i), MaxCertSize); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: x5chain is major type %d, not a bstr or an array of bstr", ErrMalformed, m)
}

// splitBundle reads an upload bundle, [envelope: bstr, [* media: bstr]]
// (docs/envelope.md §7): definite lengths in any form (the bundle is not
// hashed), a non-empty envelope, at most MaxMedia media objects, nothing
// after. The envelope and media are slices of data: nothing is copied, and
// a bundle over the media limit is refused from its head alone, before any
// object is read.
func splitBundle(data []byte) (*Bundle, error) {
	r := &cborReader{b: data, anyForm: true}
	if n, err := r.expect(majorArray, "bundle"); err != nil {
		return nil, err
	} else if n != 2 {
		return nil, fmt.Errorf("%w: bundle array of %d, want 2", ErrMalformed, n)
	}
	env, err := r.bytes("bundle envelope", -1)
	if err != nil {
		return nil, err
	}
	if len(env) == 0 {
		return nil, fmt.Errorf("%w: bundle has no envelope", ErrMalformed)
	}
	n, err := r.expect(majorArray, "bundle media")
	if err != nil {
		return nil, err
	}
	if n > MaxMedia {
		return nil, fmt.Errorf("%w: bundle has %d media objects, at most %d", ErrMalformed, n, MaxMedia)
	}
	b := &Bundle{Envelope: env}
	if n > 0 {
		b.Media = make([][]byte, n)
	}
	for i := range b.Media {
		if b.Media[i], err = r.bytes(fmt.Sprintf("bundle media object %d", i), -1); err != nil {
			return nil, err
		}
	}
	if r.off != len(data) {
		return nil, fmt.Errorf("%w: %d bytes after the bundle", ErrMalformed, len(data)-r.off)
	}
	return b, nil
}
