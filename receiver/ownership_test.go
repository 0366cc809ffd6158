package receiver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// setPairings replaces device's pairings: a correction of the registry (the
// tests of its freshness use it), not a transfer, which never moves a
// stored record (PairFrom).
func setPairings(t *testing.T, dir, device string, ps ...pairing) {
	t.Helper()
	err := updateRegistry(dir, func(r *registry) error {
		r.edit(device).Pairings = ps
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// registryBytes returns the registry's files (snapshot and journal) as they
// are on disk.
func registryBytes(t *testing.T, dir string) []byte {
	t.Helper()
	snap, err := os.ReadFile(filepath.Join(dir, registryFile))
	if err != nil {
		t.Fatal(err)
	}
	journal, err := os.ReadFile(filepath.Join(dir, registryJournal))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return append(append(snap, 0), journal...)
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// events returns the event IDs owner sees, newest first.
func (e *testEnv) events(owner string) []string {
	e.t.Helper()
	evs, err := e.srv.OwnerEvents(owner)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, v := range evs {
		out = append(out, v.Event)
	}
	return out
}

func (e *testEnv) wantEvents(owner string, want ...string) {
	e.t.Helper()
	if got := e.events(owner); strings.Join(got, ",") != strings.Join(want, ",") {
		e.t.Errorf("%s sees %q, want %q", owner, got, want)
	}
}

// TestTransferMovesNoHistory: a camera sold from alice to bob. Alice keeps
// what it recorded under her pairing and sees nothing after; bob sees only
// what it recorded after his; neither sees the other's, by list, media or
// envelope; re-pairing to alice later shows her nothing of the gap.
func TestTransferMovesNoHistory(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r1, r2 := d.record(t, "alice-ev1", provenance.KindStart, 1), d.record(t, "alice-ev2", provenance.KindStart, 2)
	e.mustUpload(r1, http.StatusCreated)
	e.mustUpload(r2, http.StatusCreated)

	if err := Pair(e.dir, d.id, "bob"); err != nil {
		t.Fatal(err)
	}
	r3 := d.record(t, "bob-ev3", provenance.KindStart, 3)
	e.mustUpload(r3, http.StatusCreated)
	e.wantEvents("alice", "alice-ev2", "alice-ev1")
	e.wantEvents("bob", "bob-ev3")
	for _, c := range []struct {
		owner string
		r     *record
		want  int
	}{{"alice", r1, 200}, {"alice", r3, 404}, {"bob", r1, 404}, {"bob", r2, 404}, {"bob", r3, 200}} {
		if code, _, _ := e.getAs(c.owner, mediaURL(d, c.r)); code != c.want {
			t.Errorf("%s's media of %s: %d, want %d", c.owner, c.r.event, code, c.want)
		}
		if code, _, _ := e.getAs(c.owner, envelopeURL(d, c.r)); code != c.want {
			t.Errorf("%s's envelope of %s: %d, want %d", c.owner, c.r.event, code, c.want)
		}
	}
	if _, page, _ := e.getAs("bob", "/"); bytes.Contains(page, []byte("alice-ev1")) || bytes.Contains(page, []byte("alice-ev2")) {
		t.Error("bob's page shows alice's events")
	}
	if _, page, _ := e.getAs("alice", "/"); bytes.Contains(page, []byte("bob-ev3")) {
		t.Error("alice's page shows bob's event")
	}

	// Unpaired: the records are stored, verified, and visible to no one.
	if err := Unpair(e.dir, d.id); err != nil {
		t.Fatal(err)
	}
	e.mustUpload(d.record(t, "gap4", provenance.KindStart, 4), http.StatusCreated)
	// Back to alice: she sees her old records and the new ones, not the gap.
	if err := Pair(e.dir, d.id, "alice"); err != nil {
		t.Fatal(err)
	}
	e.mustUpload(d.record(t, "alice-ev5", provenance.KindStart, 5), http.StatusCreated)
	e.wantEvents("alice", "alice-ev5", "alice-ev2", "alice-ev1")
	e.wantEvents("bob", "bob-ev3")
	reg := e.registry()
	// mayServe (no record given) answers for the open pairing.
	for owner, want := range map[string]bool{"alice": true, "bob": false} {
		if ok, err := e.srv.mayServe(reg, d.id, owner); err != nil || ok != want {
			t.Errorf("mayServe(%s) = %v, %v", owner, ok, err)
		}
	}
	want := []pairing{{"alice", 0, 3}, {"bob", 3, 4}, {"alice", 5, 0}}
	if got := reg.Devices[d.id].Pairings; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pairings %v, want %v", got, want)
	}
	if n := e.srv.Stats().MixupsCaught; n != 0 {
		t.Errorf("mix-ups with the registry as the lookup: %d", n)
	}
	// The same survives a restart.
	e.close()
	e.open(Options{})
	e.wantEvents("alice", "alice-ev5", "alice-ev2", "alice-ev1")
	e.wantEvents("bob", "bob-ev3")
}

// PairFrom begins at the device's signed sequence number, never below a
// stored record or the end of an earlier pairing.
func TestPairFrom(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "")
	e.mustUpload(d.record(t, "unpaired1", provenance.KindStart, 1), http.StatusCreated)
	// Below a stored record: raised above it, the record stays no one's.
	if err := PairFrom(e.dir, d.id, "alice", 0); err != nil {
		t.Fatal(err)
	}
	e.wantEvents("alice")
	// bob's claim proved seq 10 is the device's next: records it signed
	// before (seq 2..9, still in its spool) stay alice's.
	if err := PairFrom(e.dir, d.id, "bob", 10); err != nil {
		t.Fatal(err)
	}
	e.mustUpload(d.record(t, "spooled7", provenance.KindStart, 7), http.StatusCreated)
	e.mustUpload(d.record(t, "claimed10", provenance.KindStart, 10), http.StatusCreated)
	e.wantEvents("alice", "spooled7")
	e.wantEvents("bob", "claimed10")
	// Going back in time is not possible: carol "from 5" begins at 11,
	// above bob's stored record of seq 10.
	if err := PairFrom(e.dir, d.id, "carol", 5); err != nil {
		t.Fatal(err)
	}
	e.wantEvents("bob", "claimed10")
	e.wantEvents("carol")
	if got := e.registry().Devices[d.id].Pairings; fmt.Sprint(got) != fmt.Sprint([]pairing{{"alice", 2, 10}, {"bob", 10, 11}, {"carol", 11, 0}}) {
		t.Errorf("pairings %v", got)
	}
	if err := PairFrom(e.dir, d.id, "Carol!", 20); !errors.Is(err, ErrOwner) {
		t.Errorf("bad owner: %v", err)
	}
	if err := PairFrom(e.dir, newDevice(t).id, "carol", 20); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("unknown device: %v", err)
	}
}

// A registry written before pairings had intervals ("owner") is read as one
// open pairing from seq 0, and written in the new form from the next change.
func TestOldRegistryFormat(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	old := fmt.Sprintf("{\n  \"generation\": 4,\n  \"version\": 1,\n  \"devices\": {\n    %q: {\"spki\": %q, \"owner\": \"alice\"}\n  }\n}\n",
		d.id, encodeB64(d.spki))
	if err := os.WriteFile(filepath.Join(dir, registryFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Options{Dir: dir})
	e.mustUpload(d.record(t, "ev1", provenance.KindStart, 1), http.StatusCreated)
	e.wantEvents("alice", "ev1")
	if err := Pair(dir, d.id, "bob"); err != nil {
		t.Fatal(err)
	}
	e.mustUpload(d.record(t, "ev2", provenance.KindStart, 2), http.StatusCreated)
	e.wantEvents("alice", "ev1")
	e.wantEvents("bob", "ev2")
	if err := compactRegistry(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, registryFile))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Devices map[string]map[string]any `json:"devices"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if dev := raw.Devices[d.id]; dev["owner"] != nil || dev["pairings"] == nil {
		t.Errorf("registry after a change:\n%s", b)
	}
	// Both forms at once, or pairings that overlap, are refused.
	for name, bad := range map[string]string{
		"both":    `{"version":1,"devices":{"` + d.id + `":{"spki":"` + encodeB64(d.spki) + `","owner":"alice","pairings":[{"owner":"bob","from_seq":0}]}}}`,
		"overlap": `{"version":1,"devices":{"` + d.id + `":{"spki":"` + encodeB64(d.spki) + `","pairings":[{"owner":"bob","from_seq":0,"until_seq":5},{"owner":"eve","from_seq":4}]}}}`,
		"open":    `{"version":1,"devices":{"` + d.id + `":{"spki":"` + encodeB64(d.spki) + `","pairings":[{"owner":"bob","from_seq":0},{"owner":"eve","from_seq":4}]}}}`,
		"empty":   `{"version":1,"devices":{"` + d.id + `":{"spki":"` + encodeB64(d.spki) + `","pairings":[{"owner":"bob","from_seq":4,"until_seq":4}]}}}`,
	} {
		if _, err := parseRegistry(name, []byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestRotationTakeover is the attack of issue 12: holding a copy of camera
// V's key and an enrolled key of one's own, a rotate record from V to one's
// own key once moved V's pairing and history to one's own owner. It is
// refused, changes nothing, and V's events stay with V's owner; a legitimate
// rotation still works, and a rotation back to a retired key is refused too.
func TestRotationTakeover(t *testing.T) {
	e := newEnv(t, Options{})
	v, mine := newDevice(t), newDevice(t)
	e.enroll(v, "victim")
	e.enroll(mine, "mallory")
	r1 := v.record(t, "home-1", provenance.KindStart, 1)
	e.mustUpload(r1, http.StatusCreated)
	e.mustUpload(mine.record(t, "mallory-1", provenance.KindStart, 1), http.StatusCreated)

	before := registryBytes(t, e.dir)
	steal := v.rotate(t, mine, 2, nil, nil) // signed with the copy of V's key
	code, reply := e.put(steal.path(), steal.body)
	if code != http.StatusForbidden || !strings.Contains(reply, "fresh key") {
		t.Fatalf("rotation to an enrolled key: %d %q, want 403", code, reply)
	}
	if n := e.srv.Stats().Rejected[ReasonRotationTarget]; n != 1 {
		t.Errorf("rotation_target count %d", n)
	}
	if after := registryBytes(t, e.dir); !bytes.Equal(before, after) {
		t.Errorf("the refused rotation changed the registry")
	}
	e.wantEvents("victim", "home-1")
	e.wantEvents("mallory", "mallory-1")
	if code, _, _ := e.getAs("mallory", mediaURL(v, r1)); code != http.StatusNotFound {
		t.Errorf("mallory gets V's thumbnail: %d", code)
	}
	// V goes on, as V, for its owner.
	e.mustUpload(v.record(t, "home-3", provenance.KindStart, 3), http.StatusCreated)
	e.wantEvents("victim", "home-3", "home-1")

	// A legitimate rotation to a fresh key works; the new key's records
	// stay the victim's, and the old history too.
	fresh := newDevice(t)
	rot := v.rotate(t, fresh, 4, nil, nil)
	if code, reply := e.put(rot.path(), rot.body); code != http.StatusCreated {
		t.Fatalf("legitimate rotation: %d %q", code, reply)
	}
	e.mustUpload(fresh.record(t, "home-5", provenance.KindStart, 5), http.StatusCreated)
	e.wantEvents("victim", "home-5", "rotate-"+fresh.id, "home-3", "home-1")
	e.wantEvents("mallory", "mallory-1")

	// Rotating back to the retired key (ever enrolled) is refused as well.
	back := fresh.rotate(t, v, 6, nil, nil)
	if code, _ := e.put(back.path(), back.body); code != http.StatusForbidden {
		t.Errorf("rotation back to a retired key: %d, want 403", code)
	}
}

// A second rotation while one is pending is refused: the old key again (to
// another key) before the new key uploaded, and the new key before it
// uploaded a record of its own.
func TestRotationPending(t *testing.T) {
	e := newEnv(t, Options{})
	a, b, c := newDevice(t), newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.mustUpload(a.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	rot := a.rotate(t, b, 2, nil, nil)
	if code, reply := e.put(rot.path(), rot.body); code != http.StatusCreated {
		t.Fatalf("rotate: %d %q", code, reply)
	}
	before := registryBytes(t, e.dir)
	// The old key again (its rotate record is above the one accepted, so
	// the key is retired already).
	again := a.rotate(t, c, 3, nil, nil)
	if code, reply := e.put(again.path(), again.body); code != http.StatusForbidden || !strings.Contains(reply, "key retired") {
		t.Errorf("old key again while pending: %d %q, want 403 key retired", code, reply)
	}
	early := b.rotate(t, c, 3, nil, nil)
	if code, reply := e.put(early.path(), early.body); code != http.StatusConflict || !strings.Contains(reply, "pending") {
		t.Errorf("new key rotating before its first upload: %d %q, want 409 pending", code, reply)
	}
	if n := e.srv.Stats().Rejected[ReasonRotationPending]; n != 1 {
		t.Errorf("rotation_pending count %d, want 1", n)
	}
	if !bytes.Equal(before, registryBytes(t, e.dir)) {
		t.Error("a refused rotation changed the registry")
	}
	// Once the new key has uploaded, it may rotate.
	e.mustUpload(b.record(t, "ev-3", provenance.KindStart, 3), http.StatusCreated)
	next := b.rotate(t, c, 4, nil, nil)
	if code, reply := e.put(next.path(), next.body); code != http.StatusCreated {
		t.Fatalf("rotation after the first upload: %d %q", code, reply)
	}
	if got := e.registry().owner(c.id); got != "alice" {
		t.Errorf("third key paired to %q, want alice", got)
	}
	// And the old key, its rotation done, is simply retired.
	if code, _ := e.put(again.path(), again.body); code != http.StatusForbidden {
		t.Errorf("old key rotating again after its rotation: %d, want 403", code)
	}
}

// Rotations of one line of keys are limited per day: the one over the limit
// is answered 429 with Retry-After (an honest camera retries) and changes
// nothing; a day later it is accepted.
func TestRotationRateLimit(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk, RotationsPerDay: 2})
	keys := []*testDevice{newDevice(t), newDevice(t), newDevice(t), newDevice(t)}
	e.enroll(keys[0], "alice")
	seq := uint64(1)
	for i := range 3 {
		e.mustUpload(keys[i].record(t, fmt.Sprintf("ev-%d", seq), provenance.KindStart, seq), http.StatusCreated)
		seq++
		rot := keys[i].rotate(t, keys[i+1], seq, nil, nil)
		seq++
		code, reply := e.put(rot.path(), rot.body)
		if i < 2 {
			if code != http.StatusCreated {
				t.Fatalf("rotation %d: %d %q", i+1, code, reply)
			}
			clk.add(time.Hour)
			continue
		}
		if code != http.StatusTooManyRequests {
			t.Fatalf("third rotation within a day: %d %q, want 429", code, reply)
		}
		// Retry-After: the first rotation leaves the window in 22 h.
		req, _ := http.NewRequest(http.MethodPut, e.hs.URL+rot.path(), bytes.NewReader(rot.body))
		resp, err := e.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ra := resp.Header.Get("Retry-After"); resp.StatusCode != http.StatusTooManyRequests || ra != fmt.Sprint(int((22*time.Hour).Seconds())) {
			t.Errorf("429 Retry-After %q (status %d), want %d", ra, resp.StatusCode, int((22 * time.Hour).Seconds()))
		}
		if reg := e.registry(); reg.Devices[keys[3].id] != nil || reg.Devices[keys[2].id].RotatedTo != "" {
			t.Error("the refused rotation changed the registry")
		}
		clk.add(22 * time.Hour)
		if code, reply := e.put(rot.path(), rot.body); code != http.StatusCreated {
			t.Fatalf("the same rotation a day later: %d %q", code, reply)
		}
	}
	if got := e.registry().owner(keys[3].id); got != "alice" {
		t.Errorf("fourth key paired to %q", got)
	}
}

// The journal survives a crash: a torn last line (an append that never
// finished) is ignored and cut by the next writer; a corrupt line refuses
// the registry; lines left behind by an interrupted compaction are skipped.
func TestRegistryJournalCrash(t *testing.T) {
	dir := t.TempDir()
	a, b := newDevice(t), newDevice(t)
	if _, err := EnrollAll(dir, []Enrollment{{PublicKey: a.key.Public(), Owner: "alice"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(dir, b.pem); err != nil {
		t.Fatal(err)
	}
	jpath := filepath.Join(dir, registryJournal)
	good, err := os.ReadFile(jpath)
	if err != nil || bytes.Count(good, []byte("\n")) != 1 {
		t.Fatalf("journal after one change: %q, %v", good, err)
	}
	rr := newRegistryReader(dir)
	if reg, err := rr.read(); err != nil || reg.Devices[b.id] == nil || reg.Generation != 2 {
		t.Fatalf("read: %v", err)
	}

	// Torn: half of a change, no newline.
	line, err := encodeJournalLine(&registry{Generation: 3, Devices: map[string]*registration{b.id: {SPKI: b.spki, Pairings: []pairing{{Owner: "mallory"}}}}, dirty: map[string]bool{b.id: true}})
	if err != nil {
		t.Fatal(err)
	}
	torn := append(append([]byte(nil), good...), line[:len(line)/2]...)
	if err := os.WriteFile(jpath, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*registryReader{rr, newRegistryReader(dir)} {
		if reg, err := r.read(); err != nil || reg.owner(b.id) != "" || reg.Generation != 2 {
			t.Fatalf("with a torn line: %v", err)
		}
	}
	if err := Pair(dir, b.id, "bob"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*registryReader{rr, newRegistryReader(dir)} {
		if reg, err := r.read(); err != nil || reg.owner(b.id) != "bob" || reg.Generation != 3 {
			t.Fatalf("after the torn line was cut and a change appended: %v", err)
		}
	}

	// Corrupt: a complete line with a flipped byte.
	j, _ := os.ReadFile(jpath)
	bad := bytes.Replace(j, []byte(`"bob"`), []byte(`"bod"`), 1)
	if err := os.WriteFile(jpath, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newRegistryReader(dir).read(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt journal line: %v, want refused", err)
	}
	if err := Pair(dir, b.id, "carol"); err == nil {
		t.Error("a change was written over a corrupt journal")
	}
	if err := os.WriteFile(jpath, j, 0o600); err != nil {
		t.Fatal(err)
	}

	// A compaction interrupted before the journal was emptied.
	if err := compactRegistry(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jpath, j, 0o600); err != nil { // the lines it held, all in the snapshot now
		t.Fatal(err)
	}
	if err := Pair(dir, b.id, "carol"); err != nil {
		t.Fatal(err)
	}
	reg, err := newRegistryReader(dir).read()
	if err != nil || reg.owner(b.id) != "carol" || reg.owner(a.id) != "alice" || reg.Generation != 4 {
		t.Fatalf("after stale lines: %v", err)
	}
}

// Compaction keeps every change, and readers follow it.
func TestRegistryCompaction(t *testing.T) {
	dir := t.TempDir()
	devs := make([]*testDevice, 20)
	es := make([]Enrollment, len(devs))
	for i := range devs {
		devs[i] = newDevice(t)
		es[i] = Enrollment{PublicKey: devs[i].key.Public()}
	}
	if _, err := EnrollAll(dir, es); err != nil {
		t.Fatal(err)
	}
	w := newRegistryReader(dir)
	w.compactMin = 1
	r := newRegistryReader(dir)
	compactions := 0
	for i := range 200 {
		d := devs[i%len(devs)]
		owner := fmt.Sprintf("owner-%d", i)
		before, _ := os.Stat(filepath.Join(dir, registryFile))
		err := w.update(func(reg *registry) error {
			reg.edit(d.id).pairFrom(owner, uint64(i))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if after, _ := os.Stat(filepath.Join(dir, registryFile)); !os.SameFile(before, after) {
			compactions++
		}
		for _, rd := range []*registryReader{r, newRegistryReader(dir)} {
			reg, err := rd.read()
			if err != nil || reg.owner(d.id) != owner || reg.Generation != uint64(i+2) {
				t.Fatalf("change %d: owner %q, generation %d, %v", i, reg.owner(d.id), reg.Generation, err)
			}
		}
	}
	if compactions == 0 || compactions > 100 {
		t.Errorf("%d compactions in 200 changes", compactions)
	}
	if st, err := os.Stat(filepath.Join(dir, registryJournal)); err != nil || st.Size() > 64<<10 {
		t.Errorf("journal after compactions: %v %v", st, err)
	}
}

// BenchmarkRegistryChange measures one registry change (a transfer) as the
// receiver makes it, with a registry of 100 and 10,000 devices: "journal" is
// an appended line (and now and then a compaction), "rewrite" what every
// change cost before: the whole snapshot written again.
func BenchmarkRegistryChange(b *testing.B) {
	for _, n := range []int{100, 10000} {
		dir := b.TempDir()
		es := make([]Enrollment, n)
		ids := make([]string, n)
		for i := range es {
			d := newDevice(b)
			es[i], ids[i] = Enrollment{PublicKey: d.key.Public(), Owner: "owner-a"}, d.id
		}
		if _, err := EnrollAll(dir, es); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("journal/%d", n), func(b *testing.B) {
			rr := newRegistryReader(dir)
			i := 0
			for b.Loop() {
				err := rr.update(func(r *registry) error {
					r.edit(ids[i%n]).pairFrom(fmt.Sprintf("owner-%d", i), uint64(i))
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("rewrite/%d", n), func(b *testing.B) {
			rr := newRegistryReader(dir)
			for b.Loop() {
				st, err := rr.state()
				if err != nil {
					b.Fatal(err)
				}
				if err := compact(rr.path, rr.jpath, st.reg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRotate measures an accepted rotation through Ingest with 100 and
// 5,000 other devices enrolled.
func BenchmarkRotate(b *testing.B) {
	for _, n := range []int{100, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dir := b.TempDir()
			es := make([]Enrollment, n+b.N)
			olds := make([]*testDevice, b.N)
			for i := range es {
				d := newDevice(b)
				es[i] = Enrollment{PublicKey: d.key.Public(), Owner: fmt.Sprintf("owner-%d", i%100)}
				if i >= n {
					olds[i-n] = d
				}
			}
			if _, err := EnrollAll(dir, es); err != nil {
				b.Fatal(err)
			}
			srv, err := Open(Options{Dir: dir, RotationsPerDay: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			bodies := make([][]byte, b.N)
			for i, d := range olds {
				bodies[i] = d.rotate(b, newDevice(b), 1, nil, nil).body
			}
			b.ResetTimer()
			for i := range b.N {
				if res := srv.Ingest(bodies[i], Claim{}); res.Status != http.StatusCreated {
					b.Fatalf("rotation %d: %+v", i, res)
				}
			}
		})
	}
}
