package receiver

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/provenance"
)

// TestSealedRecordsStored: records whose thumbnail and clip segments are
// sealed to the owner's keys (docs/e2ee.md §7) are verified and stored
// like any others, by the sealed bytes' size and hash: the data directory
// holds only ciphertext (no media file starts as a JPEG), the owner opens
// what was stored, and a sealed object changed on the way is refused.
func TestSealedRecordsStored(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	owner, err := e2ee.NewOwner(2)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := owner.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	const event = "ev-sealed"
	bind := func(seq uint64, role string) e2ee.Binding {
		return e2ee.Binding{Owner: owner.Fingerprint(), Device: d.id, Event: event, Seq: seq, Role: role}
	}
	seal := func(seq uint64, role string, plain []byte) []byte {
		obj, err := s.Seal(bind(seq, role), plain)
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	put := func(p *provenance.Payload, obj []byte, want int) []byte {
		t.Helper()
		env := d.sign(t, p)
		var body []byte
		if obj == nil {
			body = bundle(t, env)
		} else {
			body = bundle(t, env, obj)
		}
		if code, reply := e.put("/v1/events/"+event+"/"+p.Kind, body); code != want {
			t.Fatalf("%s seq %d: %d %q, want %d", p.Kind, p.Seq, code, reply, want)
		}
		return env
	}

	// Start: a sealed thumbnail.
	thumb := thumbFor("sealed start")
	start := d.payload(event, provenance.KindStart, 1, nil)
	obj := seal(1, provenance.RoleThumbnail, thumb)
	start.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, e2ee.SealedType, obj)}
	put(start, obj, http.StatusCreated)

	// Two sealed segments; the first is first sent with one byte changed.
	var hashes [][]byte
	for i := range 2 {
		seq := uint64(2 + i)
		var frames []provenance.ClipFrame
		var plain []byte
		for k := range 3 {
			f := thumbFor(fmt.Sprintf("segment %d frame %d", i, k))
			frames = append(frames, provenance.NewClipFrame(f, int64(i*3+k)*100_000))
			plain = append(plain, f...)
		}
		p := d.payload(event, provenance.KindSegment, seq, nil)
		obj := seal(seq, provenance.RoleFrames, plain)
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleFrames, e2ee.SealedType, obj)}
		p.Segment = &provenance.Segment{Index: uint32(i), Type: "image/jpeg", Frames: frames}
		if i == 0 {
			bad := bytes.Clone(obj)
			bad[len(bad)/2] ^= 1
			put(p, bad, http.StatusUnprocessableEntity)
			if _, err := owner.Open(bad, bind(seq, provenance.RoleFrames)); err == nil {
				t.Fatal("a changed sealed segment opened")
			}
		}
		env := put(p, obj, http.StatusCreated)
		h := sha256.Sum256(env)
		hashes = append(hashes, h[:])
	}

	// End: a sealed thumbnail and the segments' list.
	end := d.payload(event, provenance.KindEnd, 4, nil)
	endThumb := thumbFor("sealed end")
	obj = seal(4, provenance.RoleThumbnail, endThumb)
	end.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, e2ee.SealedType, obj)}
	end.Segments = hashes
	put(end, obj, http.StatusCreated)

	rep, err := CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("stored sealed records do not check offline: %+v", rep)
	}
	dir := filepath.Join(e.dir, "events", d.id)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	media := 0
	for _, ent := range entries {
		if filepath.Ext(ent.Name()) == ".cose" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 4)
		_, err = io.ReadFull(f, head)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(head, []byte{0xff, 0xd8, 0xff}) {
			t.Errorf("%s is a JPEG in the clear", ent.Name())
		}
		if string(head) != "KFE1" {
			t.Errorf("%s starts %q, not a sealed object's magic", ent.Name(), head)
		}
		media++
	}
	if media != 4 {
		t.Fatalf("%d media files stored, want 4 (two thumbnails, two segments)", media)
	}
	// What was stored is what the owner opens.
	stored, err := os.ReadFile(filepath.Join(dir, event+"-end.0."+mediaExt(e2ee.SealedType)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := owner.Open(stored, bind(4, provenance.RoleThumbnail))
	if err != nil || !bytes.Equal(got, endThumb) {
		t.Fatalf("the stored end thumbnail opens to %d bytes (%v), want the thumbnail", len(got), err)
	}
}
