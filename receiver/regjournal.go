package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

// The registry on disk is a snapshot and a journal:
//
//   - registry.json, the snapshot: the whole registry as JSON, its first
//     field the generation it was written at, replaced atomically (temp file,
//     fsync, rename, fsync of the directory);
//   - registry.journal, the changes since: one line per change, appended and
//     fsynced, `<CRC-32C of the JSON, 8 hex digits> <JSON>\n`, the JSON being
//     {"gen": N, "devices": {id: registration}, "fleet_cas": {fp: CA or null}}
//     with the full new record of every device and CA the change touched
//     (null: a CA removed; devices are never removed).
//
// A change therefore costs one appended line and one fsync, whatever the
// size of the registry. When the journal outgrows the snapshot (and
// journalCompactMin) the writer compacts: it writes a new snapshot at the
// current generation, then empties the journal. A crash between the two
// leaves journal lines at or below the snapshot's generation; readers skip
// them. A journal line's generation must otherwise be one above the state it
// applies to: a gap means the snapshot was replaced while it was being read,
// and the read starts again.
//
// Crash safety: a last line without its newline is an append interrupted by
// a crash, never acknowledged: readers ignore it and the next writer cuts it
// off before appending. Any complete line whose checksum or JSON is wrong is
// corruption, and the registry is refused (a change silently skipped could
// be a revocation). Without a snapshot the journal means nothing (it holds
// changes to a state that is gone) and the registry is empty; the next
// change writes a snapshot.
//
// Reading is cheap without being a cache that can go stale: a reader keeps
// the state of its last read only to compare with. Each request opens the
// snapshot, reads its first bytes and stats the journal; if the snapshot is
// the same file (device, inode, size, modification time) with the same
// generation, only the journal's new lines are read and applied, and if the
// journal has not grown nothing is read at all. Otherwise the snapshot is
// parsed again. A request costs two opens, two stats and a 64-byte read, not
// a parse of megabytes (10,000 devices make a snapshot of about 2 MB).

const (
	registryJournal = "registry.journal"
	// journalCompactMin is the journal size below which it is never
	// compacted; above it, it is compacted once it is larger than the
	// snapshot, so a change costs amortised O(1) writes.
	journalCompactMin = 256 << 10
	// registryHead is how many bytes of the snapshot a request reads to
	// learn the generation: `{`, a newline, two spaces, `"generation": `,
	// 20 digits and a comma fit with room to spare.
	registryHead = 64
	// generationPrefix is how the snapshot written by compact begins; the
	// generation's digits follow.
	generationPrefix = "{\n  \"generation\": "
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// headGeneration finds the generation in the first bytes of a snapshot as
// compact writes it. ok is false for any other layout (a file written by
// hand or by an older version): the reader then parses the whole file on
// every request, which is slow but never stale.
func headGeneration(head []byte) (gen uint64, ok bool) {
	rest, found := bytes.CutPrefix(head, []byte(generationPrefix))
	if !found {
		return 0, false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > 20 || n == len(rest) || rest[n] != ',' {
		return 0, false
	}
	gen, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	return gen, err == nil
}

// journalEntry is one line of the journal.
type journalEntry struct {
	Gen      uint64                   `json:"gen"`
	Devices  map[string]*registration `json:"devices,omitempty"`
	FleetCAs map[string]*fleetCA      `json:"fleet_cas,omitempty"`
}

// encodeJournalLine makes the journal line of an update's changes.
func encodeJournalLine(w *registry) ([]byte, error) {
	e := journalEntry{Gen: w.Generation}
	if len(w.dirty) > 0 {
		e.Devices = make(map[string]*registration, len(w.dirty))
		for id := range w.dirty {
			e.Devices[id] = w.Devices[id]
		}
	}
	if len(w.dirtyCAs) > 0 {
		e.FleetCAs = make(map[string]*fleetCA, len(w.dirtyCAs))
		for fp := range w.dirtyCAs {
			e.FleetCAs[fp] = w.FleetCAs[fp] // nil: removed
		}
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("receiver: encode registry change: %w", err)
	}
	line := fmt.Appendf(nil, "%08x ", crc32.Checksum(b, castagnoli))
	return append(append(line, b...), '\n'), nil
}

// decodeJournalLine decodes one complete journal line (without its newline).
func decodeJournalLine(line []byte) (*journalEntry, error) {
	sum, body, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(sum) != 8 {
		return nil, errors.New("no checksum")
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil {
		return nil, errors.New("no checksum")
	}
	if crc32.Checksum(body, castagnoli) != uint32(want) {
		return nil, errors.New("checksum mismatch")
	}
	var e journalEntry
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the change")
	}
	for id, d := range e.Devices {
		if err := checkRegistration(id, d); err != nil {
			return nil, err
		}
	}
	for fp, ca := range e.FleetCAs {
		if ca == nil {
			continue
		}
		if err := checkFleetCA(fp, ca); err != nil {
			return nil, err
		}
	}
	return &e, nil
}

// registryReader reads a data directory's registry for a Server, keeping
// the state of its last read only to compare with (see the comment at the
// top of this file). Registries it returns are shared: callers must not
// modify them (update gives fn its own copy through forUpdate).
type registryReader struct {
	path, jpath string
	compactMin  int64 // journalCompactMin; tests lower it

	mu       sync.Mutex // held across a read, so a burst of requests after a write parses once
	reg      *registry  // the state of the last read, nil if none (or its snapshot had no generation)
	snapGen  uint64     // its snapshot's generation
	snapInfo os.FileInfo
	jInfo    os.FileInfo // its journal, nil if there was none
	jOff     int64       // the end of the journal's last complete line read
	parses   uint64      // full reads and parses of the snapshot, for tests and figures
}

func newRegistryReader(dir string) *registryReader {
	return &registryReader{path: filepath.Join(dir, registryFile), jpath: filepath.Join(dir, registryJournal), compactMin: journalCompactMin}
}

// sameFile reports whether two stats describe the same, unchanged file.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// regState is a registry as read, with what a writer needs to know of its
// files.
type regState struct {
	reg      *registry
	snapshot bool  // a snapshot with a readable generation exists
	snapSize int64 // its size
	jOff     int64 // the end of the journal's last complete line
	jSize    int64 // the journal's size: above jOff, a torn line
}

// read returns the registry as it is on disk now.
func (rr *registryReader) read() (*registry, error) {
	st, err := rr.state()
	return st.reg, err
}

// errRetry says that the snapshot changed while the journal was read.
var errRetry = errors.New("the registry changed while it was read")

func (rr *registryReader) state() (regState, error) {
	for range 8 {
		st, err := rr.stateOnce()
		if !errors.Is(err, errRetry) {
			return st, err
		}
	}
	return regState{}, fmt.Errorf("receiver: read registry: %w, again and again", errRetry)
}

func (rr *registryReader) stateOnce() (regState, error) {
	f, err := os.Open(rr.path)
	if errors.Is(err, os.ErrNotExist) {
		return regState{reg: emptyRegistry()}, nil
	}
	if err != nil {
		return regState{}, fmt.Errorf("receiver: read registry: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return regState{}, fmt.Errorf("receiver: read registry: %w", err)
	}
	var buf [registryHead]byte
	n, err := io.ReadFull(f, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return regState{}, fmt.Errorf("receiver: read registry: %w", err)
	}
	head := buf[:n]
	gen, hasGen := headGeneration(head)

	rr.mu.Lock()
	defer rr.mu.Unlock()
	st := regState{snapshot: hasGen, snapSize: info.Size()}
	cached := hasGen && rr.reg != nil && rr.snapGen == gen && sameFile(rr.snapInfo, info)
	var base *registry
	var off int64
	if cached {
		base, off = rr.reg, rr.jOff
	} else {
		// Changed (or never read): read the rest of this very file, so
		// head, body and stat describe one version.
		rest, err := io.ReadAll(f)
		if err != nil {
			return regState{}, fmt.Errorf("receiver: read registry: %w", err)
		}
		b := make([]byte, 0, len(head)+len(rest))
		b = append(append(b, head...), rest...)
		rr.parses++
		base, err = parseRegistry(rr.path, b)
		if err != nil {
			return regState{}, err
		}
		if base.Generation != gen {
			st.snapshot, hasGen = false, false
		}
	}
	reg, jInfo, off, size, err := rr.applyJournal(base, cached, off)
	if err != nil {
		if errors.Is(err, errRetry) {
			rr.reg = nil
		}
		return regState{}, err
	}
	st.reg, st.jOff, st.jSize = reg, off, size
	if hasGen {
		rr.reg, rr.snapGen, rr.snapInfo, rr.jInfo, rr.jOff = reg, gen, info, jInfo, off
	} else {
		rr.reg, rr.snapInfo, rr.jInfo = nil, nil, nil
	}
	return st, nil
}

// applyJournal applies the journal's complete lines from offset off to
// base (shared: it is copied before any change) and returns the state, the
// journal's stat, the end of its last complete line and its size. With
// cached, base is the state of the last read and off where it stopped: a
// journal that is no longer the one read then is errRetry.
func (rr *registryReader) applyJournal(base *registry, shared bool, off int64) (*registry, os.FileInfo, int64, int64, error) {
	jf, err := os.Open(rr.jpath)
	if errors.Is(err, os.ErrNotExist) {
		if shared && rr.jInfo != nil {
			return nil, nil, 0, 0, errRetry
		}
		return base, nil, 0, 0, nil
	}
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("receiver: read registry journal: %w", err)
	}
	defer jf.Close()
	jInfo, err := jf.Stat()
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("receiver: read registry journal: %w", err)
	}
	if shared && (rr.jInfo != nil && !os.SameFile(jInfo, rr.jInfo) || rr.jInfo == nil && off > 0 || jInfo.Size() < off) {
		return nil, nil, 0, 0, errRetry
	}
	if jInfo.Size() == off {
		return base, jInfo, off, off, nil
	}
	if _, err := jf.Seek(off, io.SeekStart); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("receiver: read registry journal: %w", err)
	}
	data, err := io.ReadAll(jf)
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("receiver: read registry journal: %w", err)
	}
	size := off + int64(len(data))
	reg := base
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // torn: an append that never finished
		}
		e, err := decodeJournalLine(data[:i])
		if err != nil {
			return nil, nil, 0, 0, fmt.Errorf("receiver: registry journal %s: the line at byte %d is corrupt (%v); refusing the registry: repair or remove the line", rr.jpath, off, err)
		}
		switch {
		case e.Gen <= reg.Generation:
			// Written before the snapshot (a compaction interrupted
			// before the journal was emptied).
		case e.Gen == reg.Generation+1:
			if reg == base && shared {
				reg = &registry{Version: base.Version, Devices: maps.Clone(base.Devices), FleetCAs: maps.Clone(base.FleetCAs)}
			}
			reg.Generation = e.Gen
			maps.Copy(reg.Devices, e.Devices)
			for fp, ca := range e.FleetCAs {
				if ca == nil {
					delete(reg.FleetCAs, fp)
				} else {
					reg.FleetCAs[fp] = ca
				}
			}
		default:
			return nil, nil, 0, 0, errRetry
		}
		data = data[i+1:]
		off += int64(i + 1)
	}
	return reg, jInfo, off, size, nil
}

// forUpdate returns a copy of r for an update to change through edit, put
// and putCA, sharing r's maps and records until they are changed.
func (r *registry) forUpdate() *registry {
	return &registry{Generation: r.Generation, Version: r.Version, Devices: r.Devices, FleetCAs: r.FleetCAs,
		shared: true, sharedCAs: true}
}

// updateRegistry runs fn on the current registry in dir under the registry
// lock and, if fn succeeds and changed anything, writes the change.
func updateRegistry(dir string, fn func(*registry) error) error {
	return newRegistryReader(dir).update(fn)
}

// update runs fn on the current registry under the registry lock and, if fn
// succeeds and changed anything (through edit, put or putCA), appends the
// change to the journal, or compacts. A failing fn writes nothing.
func (rr *registryReader) update(fn func(*registry) error) error {
	dir := filepath.Dir(rr.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("receiver: data directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, registryLock), true)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := rr.state()
	if err != nil {
		return err
	}
	w := st.reg.forUpdate()
	if err := fn(w); err != nil {
		return err
	}
	if len(w.dirty) == 0 && len(w.dirtyCAs) == 0 {
		return nil
	}
	w.Generation = st.reg.Generation + 1
	line, err := encodeJournalLine(w)
	if err != nil {
		return err
	}
	if !st.snapshot || st.jOff+int64(len(line)) > max(rr.compactMin, st.snapSize) {
		return compact(rr.path, rr.jpath, w)
	}
	return appendJournal(rr.jpath, st, line)
}

// appendJournal appends one change to the journal and fsyncs it, first
// cutting off a torn last line.
func appendJournal(path string, st regState, line []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("receiver: write registry journal: %w", err)
	}
	defer f.Close()
	if st.jSize != st.jOff {
		if err := f.Truncate(st.jOff); err != nil {
			return fmt.Errorf("receiver: cut torn registry journal line: %w", err)
		}
	}
	if _, err := f.WriteAt(line, st.jOff); err != nil {
		f.Truncate(st.jOff) // best effort: the next writer cuts it anyway
		return fmt.Errorf("receiver: write registry journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("receiver: fsync registry journal: %w", err)
	}
	if st.jOff == 0 {
		// Possibly a new file: make its directory entry durable too.
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			return fmt.Errorf("receiver: %w", err)
		}
	}
	return nil
}

// compact writes r as the new snapshot, then empties the journal.
func compact(path, jpath string, r *registry) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: encode registry: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: write registry: %w", err)
	}
	// The snapshot holds every change now; the journal's lines are at or
	// below its generation, so a crash before this truncation is harmless.
	if err := os.Truncate(jpath, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("receiver: empty registry journal: %w", err)
	}
	if f, err := os.OpenFile(jpath, os.O_WRONLY, 0); err == nil {
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("receiver: fsync registry journal: %w", err)
		}
	}
	return nil
}

// compactRegistry writes the registry in dir as one snapshot with an empty
// journal (what an operator editing registry.json by hand needs first).
func compactRegistry(dir string) error {
	unlock, err := lockFile(filepath.Join(dir, registryLock), true)
	if err != nil {
		return err
	}
	defer unlock()
	rr := newRegistryReader(dir)
	st, err := rr.state()
	if err != nil {
		return err
	}
	return compact(rr.path, rr.jpath, st.reg)
}
