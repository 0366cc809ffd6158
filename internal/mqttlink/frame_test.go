package mqttlink

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func publishPacket(t testing.TB, topic string, qos byte, retain bool, id uint16, payload []byte) []byte {
	t.Helper()
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.Retain, p.MessageID, p.Payload = topic, qos, retain, id, payload
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func pubackPacket(t testing.TB, id uint16) []byte {
	t.Helper()
	p := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
	p.MessageID = id
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// readAll reads packets with paho's decoder from a frameReader over r.
func readAll(t *testing.T, r io.Reader, limit int) ([]packets.ControlPacket, error) {
	t.Helper()
	fr := newFrameReader(r, limit)
	var out []packets.ControlPacket
	for {
		p, err := packets.ReadPacket(fr)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, p)
	}
}

// Packets within the limit pass unchanged however the reads are split; an
// oversized PUBLISH arrives without payload under its cut topic, with its
// flags and packet ID, and the stream goes on after it.
func TestFrameReaderPassesSmallPacketsAndCutsLargePublishes(t *testing.T) {
	const limit = 2000
	small := bytes.Repeat([]byte("s"), 1500)
	big := bytes.Repeat([]byte("B"), 100000)
	var stream []byte
	stream = append(stream, publishPacket(t, "k/d/cmd/status", 1, false, 7, small)...)
	stream = append(stream, publishPacket(t, "k/d/events/e/start", 1, true, 8, big)...)
	stream = append(stream, pubackPacket(t, 9)...)
	stream = append(stream, publishPacket(t, "k/d/x", 0, false, 0, big)...)
	stream = append(stream, publishPacket(t, "k/d/ack", 0, false, 0, []byte("tail"))...)
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+eof": iotest.DataErrReader,
	} {
		got, err := readAll(t, wrap(bytes.NewReader(stream)), limit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != 5 {
			t.Fatalf("%s: %d packets, want 5", name, len(got))
		}
		p0 := got[0].(*packets.PublishPacket)
		if p0.TopicName != "k/d/cmd/status" || !bytes.Equal(p0.Payload, small) || p0.MessageID != 7 {
			t.Errorf("%s: small publish changed: %s", name, p0)
		}
		p1 := got[1].(*packets.PublishPacket)
		orig, size, s, ok := ParseCut(p1.TopicName)
		if !ok || orig != "k/d/events/e/start" || size != len(big) || s != sum(big) || len(p1.Payload) != 0 ||
			p1.MessageID != 8 || p1.Qos != 1 || !p1.Retain {
			t.Errorf("%s: big publish: %s, cut %q %d %s %v", name, p1, orig, size, s, ok)
		}
		if a, ok := got[2].(*packets.PubackPacket); !ok || a.MessageID != 9 {
			t.Errorf("%s: puback = %v", name, got[2])
		}
		p3 := got[3].(*packets.PublishPacket)
		if orig, size, _, ok := ParseCut(p3.TopicName); !ok || orig != "k/d/x" || size != len(big) || p3.Qos != 0 {
			t.Errorf("%s: QoS 0 big publish: %s", name, p3)
		}
		if p4 := got[4].(*packets.PublishPacket); string(p4.Payload) != "tail" {
			t.Errorf("%s: last publish: %s", name, p4)
		}
	}
	// A stream that ends inside a packet is an unexpected EOF, not a clean end.
	for _, n := range []int{1, 2, 10, len(stream) - 1} {
		_, err := readAll(t, bytes.NewReader(stream[:n]), limit)
		if !errors.Is(err, io.ErrUnexpectedEOF) && (err == nil || !strings.Contains(err.Error(), "EOF")) {
			t.Errorf("stream cut after %d bytes: err %v, want an unexpected EOF", n, err)
		}
	}
}

// The remaining length's varint at each of its size boundaries, and MQTT's
// largest (268,435,455 bytes: streamed through, not held in memory).
func TestFrameReaderLengthEdges(t *testing.T) {
	for _, n := range []int{0, 127, 128, 16383, 16384, 2097151, 2097152} {
		enc := encodeLength(n)
		rem, hdr, err := newFrameReader(bytes.NewReader(enc), 1<<30).readLength(0x30)
		if err != nil || rem != n || len(hdr) != 1+len(enc) {
			t.Errorf("length %d (%x): got %d, %x, %v", n, enc, rem, hdr, err)
		}
	}
	if got := encodeLength(268435455); !bytes.Equal(got, []byte{0xff, 0xff, 0xff, 0x7f}) {
		t.Errorf("encodeLength(max) = %x", got)
	}
	// Five varint bytes are not MQTT.
	fr := newFrameReader(bytes.NewReader([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}), 1<<30)
	if _, err := io.ReadAll(fr); !errors.Is(err, errMalformed) {
		t.Errorf("5-byte length: err %v, want malformed", err)
	}
	// A topic longer than the packet.
	fr = newFrameReader(bytes.NewReader([]byte{0x30, 0x7f, 0xff, 0xff}), 10)
	if _, err := io.ReadAll(fr); !errors.Is(err, errMalformed) {
		t.Errorf("topic over the packet: err %v, want malformed", err)
	}
	// An oversized packet that is not a PUBLISH ends the stream.
	fr = newFrameReader(bytes.NewReader(append([]byte{0x90}, encodeLength(5000)...)), 1000)
	if _, err := io.ReadAll(fr); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("oversized SUBACK: err %v, want ErrPacketTooLarge", err)
	}

	// The largest PUBLISH MQTT allows, streamed: its memory stays small.
	const max = 268435455
	head := append([]byte{0x32}, encodeLength(max)...)
	head = append(head, 0, 3, 'a', '/', 'b', 0x12, 0x34)
	payload := int64(max - 2 - 3 - 2)
	r := io.MultiReader(bytes.NewReader(head), io.LimitReader(zeros{}, payload))
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	p, err := packets.ReadPacket(newFrameReader(r, 4096))
	runtime.ReadMemStats(&ms1)
	if err != nil {
		t.Fatal(err)
	}
	pub := p.(*packets.PublishPacket)
	orig, size, _, ok := ParseCut(pub.TopicName)
	if !ok || orig != "a/b" || int64(size) != payload || pub.MessageID != 0x1234 || len(pub.Payload) != 0 {
		t.Errorf("largest publish: %s", pub)
	}
	alloc := ms1.TotalAlloc - ms0.TotalAlloc
	t.Logf("a %d-byte PUBLISH cut with %d bytes allocated", max, alloc)
	if alloc > 1<<20 {
		t.Errorf("cutting a %d-byte publish allocated %d bytes, want under 1 MiB", max, alloc)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestParseCutRefusesOtherTopics(t *testing.T) {
	s := sum(nil)
	for _, topic := range []string{"", "k/d/events/e/start", "oversized/1/" + s + "/t", "\x00oversized/x/" + s + "/t",
		"\x00oversized/-1/" + s + "/t", "\x00oversized/1/abc/t", "\x00oversized/1"} {
		if _, _, _, ok := ParseCut(topic); ok {
			t.Errorf("ParseCut(%q) accepted", topic)
		}
	}
	if o, n, got, ok := ParseCut(CutTopic("a/b", 5, s)); !ok || o != "a/b" || n != 5 || got != s {
		t.Errorf("round trip: %q %d %q %v", o, n, got, ok)
	}
}

// FuzzFrameReader: whatever the stream, the reader never panics, and every
// packet it hands on is within the limit or a cut PUBLISH without payload.
func FuzzFrameReader(f *testing.F) {
	f.Add(publishPacket(f, "a/b", 1, false, 1, bytes.Repeat([]byte("x"), 3000)), uint16(0))
	f.Add(append(pubackPacket(f, 1), publishPacket(f, "a", 0, true, 0, []byte("y"))...), uint16(1))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}, uint16(2000))
	f.Fuzz(func(t *testing.T, data []byte, lim uint16) {
		limit := 1200 + int(lim)%4096
		fr := newFrameReader(iotest.OneByteReader(bytes.NewReader(data)), limit)
		out, _ := io.ReadAll(fr)
		// Re-read the output with a plain framing: each packet fits.
		for len(out) > 0 {
			if len(out) < 2 {
				return
			}
			rem, n := 0, 1
			mul := 1
			for ; n <= 4 && n < len(out); n++ {
				rem += int(out[n]&0x7f) * mul
				mul <<= 7
				if out[n]&0x80 == 0 {
					break
				}
			}
			if rem > limit {
				t.Fatalf("a packet of %d bytes over the limit %d was handed on", rem, limit)
			}
			end := n + 1 + rem
			if end > len(out) {
				return // the input ended inside it
			}
			out = out[end:]
		}
	})
}
