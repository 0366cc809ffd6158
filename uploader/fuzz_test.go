package uploader

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzSpoolRecord puts arbitrary bytes in a spool directory as a record file
// and opens the spool: it must never panic or fail to open; the file is
// either accepted as exactly one pending record, whose bytes re-encode to the
// file, or quarantined (byte for byte, with a reason) and counted. It never
// stays in the spool unaccounted for. misname puts the file under a name
// that its header (if any) does not give it.
func FuzzSpoolRecord(f *testing.F) {
	long := strings.Repeat("A", 64)
	for _, r := range []Record{
		testRecord(1, 1),
		testRecord(2, 300),
		{Seq: 0, Event: "e", Kind: "start", Data: []byte{0}},
		{Seq: 1<<64 - 1, Event: long, Kind: "end", Data: []byte("x")},
	} {
		b := encodeFile(&r)
		f.Add(b, false)
		f.Add(b, true)
		f.Add(b[:len(b)-1], false)
		f.Add(append(bytes.Clone(b), 0), false)
	}
	f.Add([]byte{}, false)
	f.Add([]byte("KFSP"), false)
	f.Add([]byte("KFSP\x01\x00\x00\x00\x00\x00\x00\x00\x01"), false)

	const fixedName = "00000000000000000001-e-start" + fileExt
	f.Fuzz(func(t *testing.T, data []byte, misname bool) {
		r, derr := decodeFile(data)
		if derr == nil {
			if again := encodeFile(&r); !bytes.Equal(again, data) {
				t.Fatalf("decoded record re-encodes to other bytes:\n got %x\nwant %x", again, data)
			}
			if err := checkRecord(&r); err != nil {
				t.Fatalf("decoded a record Put would refuse: %v", err)
			}
		} else if !errors.Is(derr, ErrCorrupt) {
			t.Fatalf("decode error %v does not wrap ErrCorrupt", derr)
		}

		dir := t.TempDir()
		name := fixedName
		if derr == nil && !misname {
			name = fileName(Entry{Seq: r.Seq, Event: r.Event, Kind: r.Kind})
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		sp, err := OpenSpool(SpoolConfig{Dir: dir})
		if err != nil {
			t.Fatalf("OpenSpool: %v", err)
		}
		st := sp.Stats()
		accept := derr == nil && name == fileName(Entry{Seq: r.Seq, Event: r.Event, Kind: r.Kind})
		if !accept {
			if st.Pending != 0 || st.Corrupt != 1 || st.Quarantined != 1 {
				t.Fatalf("bad file (decode: %v, name %s): Stats %+v, want it quarantined and counted", derr, name, st)
			}
			q, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name))
			if err != nil || !bytes.Equal(q, data) {
				t.Fatalf("quarantined copy differs or is missing: %v", err)
			}
			if reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name+".reason")); err != nil || len(reason) < 2 {
				t.Fatalf("reason %q, %v", reason, err)
			}
			if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("bad file left in the spool: %v", err)
			}
			return
		}
		if st.Pending != 1 || st.Corrupt != 0 || st.Quarantined != 0 || st.Bytes != int64(len(data)) {
			t.Fatalf("good file: Stats %+v", st)
		}
		e := sp.Pending()[0]
		got, err := sp.Load(e)
		if err != nil {
			t.Fatalf("Load of an accepted record: %v", err)
		}
		if again := encodeFile(&got); !bytes.Equal(again, data) {
			t.Fatalf("loaded record re-encodes to other bytes")
		}
	})
}
