package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Deleting events, and each owner's retention (docs/pages.md).
//
// The index is append-only and the replay check needs every sequence number
// a device ever stored, so a deleted record keeps its index line: its
// deletion is a line of Dir/deleted.jsonl (appended and fsynced before any
// file goes), and then its envelope and media files are removed. Open marks
// the records deleted.jsonl names and removes any of their files a crash
// left behind. A deleted record is shown to no one, streamed to no one and
// skipped by CheckStore; a device sending it again is answered as an
// identical re-send and it stays deleted.

const (
	deletedFile   = "deleted.jsonl"
	retentionFile = "retention.json"
)

// Why a record was deleted (deletion.By).
const (
	deletedByOwner     = "owner"
	deletedByRetention = "retention"
)

// deletion is one line of deleted.jsonl.
type deletion struct {
	Device string    `json:"device"`
	Event  string    `json:"event"`
	Kind   string    `json:"kind"` // the record's name: its kind, or segment-<index> (indexEntry.name)
	At     time.Time `json:"at"`
	By     string    `json:"by"` // deletedByOwner or deletedByRetention
	Owner  string    `json:"owner"`
}

// readDeletions reads deleted.jsonl in dir; a missing file is no deletion.
// A last line without its newline is torn (a crash while appending: its
// files were never removed, and it was never acknowledged): it is not a
// deletion, and goodLen ends before it.
func readDeletions(dir string) (del map[string]bool, goodLen int64, err error) {
	data, err := os.ReadFile(filepath.Join(dir, deletedFile))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("receiver: read %s: %w", deletedFile, err)
	}
	good := data[:bytes.LastIndexByte(data, '\n')+1]
	del = map[string]bool{}
	for n, line := range bytes.Split(bytes.TrimSuffix(good, []byte("\n")), []byte("\n")) {
		if len(good) == 0 {
			break
		}
		var d deletion
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return nil, 0, fmt.Errorf("receiver: %s line %d: %w", deletedFile, n+1, err)
		}
		del[recordKey(d.Device, d.Event, d.Kind)] = true
	}
	return del, int64(len(good)), nil
}

// loadDeletions marks the records deleted.jsonl names, removes any of their
// files a crash left behind, and cuts a torn last line off. Callers own s
// exclusively (Open).
func (s *Server) loadDeletions() error {
	del, goodLen, err := readDeletions(s.dir)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, deletedFile)
	if st, err := os.Stat(path); err == nil && st.Size() > goodLen {
		s.log.Warn("receiver: ignoring torn last line of the deletions (an append interrupted by a crash)", "file", path)
		if err := os.Truncate(path, goodLen); err != nil {
			return fmt.Errorf("receiver: cut torn deletion line: %w", err)
		}
	}
	for k := range del {
		if i, ok := s.byKey[k]; ok && !s.records[i].deleted {
			s.records[i].deleted = true
			s.nDeleted++
			s.removeFiles(s.records[i])
		}
	}
	return nil
}

// removeFiles removes a deleted record's envelope and media files.
func (s *Server) removeFiles(e *indexEntry) {
	paths := []string{envelopePath(s.dir, e)}
	for i := range e.Media {
		paths = append(paths, mediaPath(s.dir, e, i))
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("receiver: remove a deleted record's file", "file", p, "err", err)
		}
	}
}

// deleteEvent deletes the records of (device, event) that owner may see
// now (a record of the event under another owner's pairing stays), and
// returns how many it deleted.
func (s *Server) deleteEvent(reg *registry, owner, device, event, by string) (int, error) {
	var mine []*indexEntry
	s.mu.Lock()
	for _, p := range s.byDevice[device] {
		e := s.records[p]
		if e.Event == event && !e.deleted && reg.ownerAt(device, e.Seq) == owner {
			mine = append(mine, e)
		}
	}
	s.mu.Unlock()
	var ok []*indexEntry
	for _, e := range mine {
		if may, err := s.mayServeEntry(reg, e, owner); err != nil {
			return 0, err
		} else if may {
			ok = append(ok, e)
		}
	}
	return s.deleteRecords(ok, owner, by)
}

// deleteRecords deletes records: their lines in deleted.jsonl first
// (fsynced), then their files.
func (s *Server) deleteRecords(es []*indexEntry, owner, by string) (int, error) {
	if len(es) == 0 {
		return 0, nil
	}
	var buf bytes.Buffer
	now := s.clk.Now().UTC()
	for _, e := range es {
		b, err := json.Marshal(deletion{Device: e.Device, Event: e.Event, Kind: e.name(), At: now, By: by, Owner: owner})
		if err != nil {
			return 0, fmt.Errorf("receiver: deletion: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("receiver: closed")
	}
	f, err := os.OpenFile(filepath.Join(s.dir, deletedFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("receiver: deletion: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return 0, fmt.Errorf("receiver: deletion: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, fmt.Errorf("receiver: deletion: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("receiver: deletion: %w", err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return 0, fmt.Errorf("receiver: deletion: %w", err)
	}
	n := 0
	for _, e := range es {
		if !e.deleted {
			e.deleted = true
			s.nDeleted++
			n++
		}
		s.removeFiles(e)
		s.log.Info("receiver: record deleted", "device", e.Device, "event", e.Event, "kind", e.Kind, "seq", e.Seq, "by", by, "owner", owner)
	}
	s.stats.Deleted += uint64(n)
	return n, nil
}

// Retention is how long, and up to how many bytes of images, an owner's
// events are kept; 0 is no bound. The sweeper deletes the owner's oldest
// events beyond either bound.
type Retention struct {
	Days  int   `json:"days"`
	Bytes int64 `json:"bytes"`
}

// Bounds of the retention an owner may set.
const (
	MaxRetentionDays  = 36500
	MaxRetentionBytes = 1 << 50
)

func (r Retention) check() error {
	switch {
	case r.Days < 0 || r.Days > MaxRetentionDays:
		return fmt.Errorf("receiver: retention days %d: want 0 (keep) to %d", r.Days, MaxRetentionDays)
	case r.Bytes < 0 || r.Bytes > MaxRetentionBytes:
		return fmt.Errorf("receiver: retention bytes %d: want 0 (no bound) to %d", r.Bytes, int64(MaxRetentionBytes))
	}
	return nil
}

// retentionDoc is retention.json.
type retentionDoc struct {
	Owners map[string]Retention `json:"owners"`
}

func readRetention(dir string) (retentionDoc, error) {
	doc := retentionDoc{Owners: map[string]Retention{}}
	b, err := os.ReadFile(filepath.Join(dir, retentionFile))
	if errors.Is(err, os.ErrNotExist) {
		return doc, nil
	}
	if err != nil {
		return doc, fmt.Errorf("receiver: read %s: %w", retentionFile, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return doc, fmt.Errorf("receiver: %s: %w", retentionFile, err)
	}
	if doc.Owners == nil {
		doc.Owners = map[string]Retention{}
	}
	for o, r := range doc.Owners {
		if err := r.check(); err != nil {
			return doc, fmt.Errorf("receiver: %s: owner %q: %w", retentionFile, o, err)
		}
	}
	return doc, nil
}

// RetentionOf returns owner's retention (the zero Retention: keep all).
func (s *Server) RetentionOf(owner string) (Retention, error) {
	s.retMu.Lock()
	defer s.retMu.Unlock()
	doc, err := readRetention(s.dir)
	return doc.Owners[owner], err
}

// SetRetention sets owner's retention; the next Sweep applies it.
func (s *Server) SetRetention(owner string, r Retention) error {
	if !ValidOwner(owner) {
		return fmt.Errorf("receiver: owner %q: %w", clip(owner), ErrOwner)
	}
	if err := r.check(); err != nil {
		return err
	}
	s.retMu.Lock()
	defer s.retMu.Unlock()
	doc, err := readRetention(s.dir)
	if err != nil {
		return err
	}
	if r == (Retention{}) {
		delete(doc.Owners, owner)
	} else {
		doc.Owners[owner] = r
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: retention: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, retentionFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: retention: %w", err)
	}
	return nil
}

// RetentionSweepEvery is how often Serve runs Sweep.
const RetentionSweepEvery = 10 * time.Minute

// Sweep applies every owner's retention at the Server's clock's now: of
// the events the owner may see, it deletes those whose newest record was
// received more than Days ago, then, newest first, every event past the
// first Bytes of images. It returns the records it deleted.
func (s *Server) Sweep() (int, error) {
	s.retMu.Lock()
	doc, err := readRetention(s.dir)
	s.retMu.Unlock()
	if err != nil {
		return 0, err
	}
	owners := make([]string, 0, len(doc.Owners))
	for o := range doc.Owners {
		owners = append(owners, o)
	}
	slices.Sort(owners)
	total := 0
	for _, o := range owners {
		n, err := s.sweepOwner(o, doc.Owners[o])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// sweepOwner applies r to owner's events (Sweep).
func (s *Server) sweepOwner(o string, r Retention) (int, error) {
	if r == (Retention{}) {
		return 0, nil
	}
	now := s.clk.Now()
	entries, _, err := s.ownerEntries(o)
	if err != nil {
		return 0, err
	}
	{
		var doomed []*indexEntry
		var used int64
		full := false
		for _, g := range s.groupEvents(entries) {
			var size int64
			newest := time.Time{}
			for _, e := range g.records {
				for _, m := range e.Media {
					size += int64(min(m.Size, MaxRetentionBytes))
				}
				if e.ReceivedAt.After(newest) {
					newest = e.ReceivedAt
				}
			}
			old := r.Days > 0 && now.Sub(newest) > time.Duration(r.Days)*24*time.Hour
			if r.Bytes > 0 && used+size > r.Bytes {
				full = true // and every older event goes too
			}
			if old || full {
				doomed = append(doomed, g.records...)
				continue
			}
			used += size
		}
		return s.deleteRecords(doomed, o, deletedByRetention)
	}
}

// sweepLoop runs Sweep every RetentionSweepEvery on clk until ctx is done.
func (s *Server) sweepLoop(ctx context.Context, clk clock.Clock, log *slog.Logger) {
	clk = clock.Or(clk)
	for {
		if n, err := s.Sweep(); err != nil {
			log.Error("receiver: retention sweep", "err", err)
		} else if n > 0 {
			log.Info("receiver: retention: records deleted", "records", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-clk.After(RetentionSweepEvery):
		}
	}
}
