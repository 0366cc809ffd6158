package livestream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	for _, f := range [][]byte{[]byte("\xff\xd8one"), []byte("\xff\xd8second frame")} {
		if err := WriteFrame(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	var buf []byte
	got1, err := ReadFrame(&b, buf, 64)
	if err != nil || string(got1) != "\xff\xd8one" {
		t.Fatalf("first: %q %v", got1, err)
	}
	got2, err := ReadFrame(&b, nil, 64)
	if err != nil || string(got2) != "\xff\xd8second frame" {
		t.Fatalf("second: %q %v", got2, err)
	}
	if _, err := ReadFrame(&b, nil, 64); !errors.Is(err, io.EOF) {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

// TestFrameBounds: an empty frame, one over the limit and a cut one are
// errors; the first two without reading their bytes.
func TestFrameBounds(t *testing.T) {
	var b bytes.Buffer
	WriteFrame(&b, bytes.Repeat([]byte{1}, 65))
	if _, err := ReadFrame(&b, nil, 64); !errors.Is(err, ErrFrameSize) || b.Len() != 65 {
		t.Errorf("over the limit: %v, %d bytes left unread, want ErrFrameSize and 65", err, b.Len())
	}
	b.Reset()
	WriteFrame(&b, nil)
	if _, err := ReadFrame(&b, nil, 64); !errors.Is(err, ErrFrameSize) {
		t.Errorf("empty: %v, want ErrFrameSize", err)
	}
	b.Reset()
	WriteFrame(&b, []byte("whole frame"))
	cut := bytes.NewReader(b.Bytes()[:8])
	if _, err := ReadFrame(cut, nil, 64); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("cut frame: %v, want an error other than io.EOF", err)
	}
}

// TestMessageUnambiguous: moving bytes between fields changes the message.
func TestMessageUnambiguous(t *testing.T) {
	a := Message("wait", "dev", []byte("nonce"))
	for _, m := range [][]byte{Message("wai", "tdev", []byte("nonce")), Message("wait", "devn", []byte("once")), Message(PurposeStream, "dev", []byte("nonce"))} {
		if bytes.Equal(a, m) {
			t.Errorf("two different requests sign the same message %q", m)
		}
	}
}

// TestRecords: a viewer's records keep their kind and bytes; an unknown
// kind, a record cut after its kind and an oversized one are errors.
func TestRecords(t *testing.T) {
	var b bytes.Buffer
	for _, r := range []struct {
		kind byte
		b    string
	}{{KindKey, KeyFrameMagic + "key"}, {KindSealed, "\x00\x00\x00\x00\x00\x00\x00\x01sealed"}, {KindJPEG, "\xff\xd8jpeg"}} {
		if err := WriteRecord(&b, r.kind, []byte(r.b)); err != nil {
			t.Fatal(err)
		}
		kind, got, err := ReadRecord(&b, nil, 64)
		if err != nil || kind != r.kind || string(got) != r.b {
			t.Errorf("record %q %q: read %q %q %v", r.kind, r.b, kind, got, err)
		}
	}
	if _, _, err := ReadRecord(&b, nil, 64); !errors.Is(err, io.EOF) {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
	WriteRecord(&b, 'x', []byte("what"))
	if _, _, err := ReadRecord(&b, nil, 64); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("an unknown kind: %v", err)
	}
	if _, _, err := ReadRecord(bytes.NewReader([]byte{KindJPEG}), nil, 64); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a record cut after its kind: %v, want io.ErrUnexpectedEOF", err)
	}
	b.Reset()
	WriteRecord(&b, KindSealed, make([]byte, 65))
	if _, _, err := ReadRecord(&b, nil, 64); !errors.Is(err, ErrFrameSize) {
		t.Errorf("over the limit: %v, want ErrFrameSize", err)
	}
}
