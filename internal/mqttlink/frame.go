package mqttlink

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Packet size limits. An MQTT packet is a fixed header (one byte of type and
// flags, then its remaining length as a varint of 1-4 bytes) and the
// remaining length's bytes; paho reads a whole packet (up to 256 MB) into
// memory before anyone can look at it, so LimitConn refuses a large one
// while reading its fixed header.
const (
	// DefaultMaxPayload is the largest event bundle: the receiver's default
	// body limit and the device's default MaxPayload.
	DefaultMaxPayload = 4 << 20
	// PacketOverhead is what a PUBLISH carries besides its payload, with
	// room to spare: the fixed header (at most 5 bytes), the topic (2 bytes
	// of length and at most 128+1+64+8+64+1+6 bytes) and the packet ID.
	// The broker's max_packet_size is DefaultMaxPayload+PacketOverhead.
	PacketOverhead = 1 << 10
	// maxCutTopic bounds the topic an oversized PUBLISH keeps when it is
	// cut; a longer one is replaced by "".
	maxCutTopic = 1 << 10
)

// ErrPacketTooLarge is wrapped by a LimitConn's Read when a packet other
// than a PUBLISH is over its limit; the connection cannot go on.
var ErrPacketTooLarge = errors.New("mqtt packet over the size limit")

// errMalformed is wrapped when the stream is not MQTT framing.
var errMalformed = errors.New("malformed mqtt packet")

// cutPrefix starts the topic of a cut PUBLISH. A topic name cannot contain
// NUL (MQTT 3.1.1 §4.7.3; brokers refuse it), so no real message has it.
const cutPrefix = "\x00oversized/"

// LimitConn wraps c so that no packet read from it has a remaining length
// over limit. An oversized PUBLISH is not read into memory: its payload is
// read and discarded (hashed on the way), and the reader is handed the same
// PUBLISH (flags and packet ID kept, so it can be acknowledged) with no
// payload and the topic CutTopic(topic, payload size, SHA-256); ParseCut
// recognises it. Any other oversized packet, or a stream that is not MQTT
// framing, fails the read (and so the connection). Writes pass through.
func LimitConn(c net.Conn, limit int) net.Conn {
	return &limitConn{Conn: c, r: newFrameReader(c, limit)}
}

type limitConn struct {
	net.Conn
	r *frameReader
}

func (c *limitConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// frameReader follows MQTT's framing on r.
type frameReader struct {
	br      *bufio.Reader
	limit   int
	pending []byte // bytes to hand out before reading on: a fixed header, a cut packet
	left    int    // body bytes of the current packet still to pass through
	err     error  // sticky
}

func newFrameReader(r io.Reader, limit int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 4096), limit: limit}
}

func (f *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(f.pending) > 0 {
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			return n, nil
		}
		if f.left > 0 {
			if len(p) > f.left {
				p = p[:f.left]
			}
			n, err := f.br.Read(p)
			f.left -= n
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		if f.err != nil {
			return 0, f.err
		}
		f.err = f.next()
	}
}

// next reads the next packet's fixed header and sets up pending and left;
// an oversized PUBLISH is consumed whole and replaced by its cut form.
func (f *frameReader) next() error {
	b0, err := f.br.ReadByte()
	if err != nil {
		return err // io.EOF between packets is a clean end
	}
	rem, hdr, err := f.readLength(b0)
	if err != nil {
		return err
	}
	if rem <= f.limit {
		f.pending, f.left = hdr, rem
		return nil
	}
	if b0>>4 != 3 {
		return fmt.Errorf("mqttlink: packet of type %d with %d bytes: %w (%d)", b0>>4, rem, ErrPacketTooLarge, f.limit)
	}
	// PUBLISH: topic length, topic, packet ID (QoS 1 and 2), payload.
	var n2 [2]byte
	if _, err := io.ReadFull(f.br, n2[:]); err != nil {
		return eof(err)
	}
	tlen := int(n2[0])<<8 | int(n2[1])
	idLen := 0
	if (b0>>1)&3 != 0 {
		idLen = 2
	}
	size := rem - 2 - tlen - idLen
	if size < 0 {
		return fmt.Errorf("mqttlink: publish of %d bytes with a topic of %d: %w", rem, tlen, errMalformed)
	}
	topic := ""
	if tlen <= maxCutTopic {
		t := make([]byte, tlen)
		if _, err := io.ReadFull(f.br, t); err != nil {
			return eof(err)
		}
		topic = string(t)
	} else if _, err := f.br.Discard(tlen); err != nil {
		return eof(err)
	}
	id := make([]byte, idLen)
	if _, err := io.ReadFull(f.br, id); err != nil {
		return eof(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, f.br, int64(size)); err != nil {
		return eof(err)
	}
	ct := CutTopic(topic, size, hex.EncodeToString(h.Sum(nil)))
	nrem := 2 + len(ct) + idLen
	pkt := append([]byte{b0}, encodeLength(nrem)...)
	pkt = append(pkt, byte(len(ct)>>8), byte(len(ct)))
	pkt = append(pkt, ct...)
	f.pending = append(pkt, id...)
	return nil
}

// readLength reads the remaining length after b0 and returns it with the
// fixed header's bytes.
func (f *frameReader) readLength(b0 byte) (int, []byte, error) {
	hdr := []byte{b0}
	rem, mul := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return 0, nil, fmt.Errorf("mqttlink: remaining length longer than 4 bytes: %w", errMalformed)
		}
		b, err := f.br.ReadByte()
		if err != nil {
			return 0, nil, eof(err)
		}
		hdr = append(hdr, b)
		rem += int(b&0x7f) * mul
		mul <<= 7
		if b&0x80 == 0 {
			return rem, hdr, nil
		}
	}
}

// eof turns an end of stream inside a packet into io.ErrUnexpectedEOF.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// encodeLength encodes n (at most 268435455) as MQTT's varint.
func encodeLength(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// CutTopic is the topic LimitConn gives an oversized PUBLISH on topic whose
// payload of size bytes with the hex SHA-256 sum it discarded.
func CutTopic(topic string, size int, sum string) string {
	return cutPrefix + strconv.Itoa(size) + "/" + sum + "/" + topic
}

// ParseCut reports whether topic is a CutTopic and returns its parts.
func ParseCut(topic string) (orig string, size int, sum string, ok bool) {
	rest, ok := strings.CutPrefix(topic, cutPrefix)
	if !ok {
		return "", 0, "", false
	}
	sz, rest, ok1 := strings.Cut(rest, "/")
	sum, orig, ok2 := strings.Cut(rest, "/")
	size, err := strconv.Atoi(sz)
	if !ok1 || !ok2 || err != nil || size < 0 || len(sum) != 64 {
		return "", 0, "", false
	}
	return orig, size, sum, true
}
