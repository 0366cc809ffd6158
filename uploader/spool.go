package uploader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/provenance"
	"io"
)

// A Record is one signed record ready to upload: the bundle bytes
// (provenance.Bundle, already encoded) and the fields that route it.
type Record struct {
	Seq   uint64 // the payload's per-device sequence number
	Event string // event ID (provenance.ValidID)
	Kind  string // provenance.KindStart, KindEnd, KindRotate or KindSegment
	Data  []byte // the encoded bundle, sent as the request body
}

// An Entry is a spooled record without its bytes.
type Entry struct {
	Seq   uint64
	Event string
	Kind  string
	Size  int64 // bytes on disk (header, data and checksum); what the bound counts
}

// Policy says what Put does when the spool is full.
type Policy string

// Spool policies.
const (
	// RefuseNew refuses the new record with ErrFull; the pending ones are kept.
	RefuseNew Policy = "refuse-new"
	// DropOldest moves the oldest pending records to quarantine/ (reason
	// "spool full") until the new one fits. Nothing is deleted silently.
	DropOldest Policy = "drop-oldest"
)

// Spool errors.
var (
	// ErrFull is returned (wrapped) by Put when the bound is reached and the
	// policy is RefuseNew, when one record alone is larger than the bound, or
	// when the spool's filesystem is full (the error then also wraps
	// syscall.ENOSPC or syscall.EDQUOT, whatever the policy).
	ErrFull = errors.New("spool full")
	// ErrCorrupt is wrapped by Load when a spooled file failed its framing or
	// checksum check; the file has been quarantined.
	ErrCorrupt = errors.New("corrupt spool file")
	// ErrNotPending is wrapped when an entry is no longer in the spool (it was
	// acknowledged, dropped or quarantined meanwhile).
	ErrNotPending = errors.New("record not pending")
)

// DefaultMaxBytes is the spool bound when SpoolConfig.MaxBytes is zero.
const DefaultMaxBytes = 64 << 20

// DefaultSegmentMaxBytes is the clip segments' budget when
// SpoolConfig.SegmentMaxBytes is zero: 256 MiB, a small part of the 8 GB or
// larger SD card of a Raspberry Pi, and about half an hour of clips at
// 150 kB/s.
const DefaultSegmentMaxBytes = 256 << 20

// maxDropEvents bounds the events whose dropped segments the spool counts
// (Spool.DroppedSegments): beyond it the counts of the events dropped from
// longest ago are forgotten.
const maxDropEvents = 256

// QuarantineDir is the name of the quarantine directory inside the spool
// directory.
const QuarantineDir = "quarantine"

// SpoolConfig configures OpenSpool.
type SpoolConfig struct {
	Dir      string       // spool directory, created 0700 if missing
	MaxBytes int64        // most bytes of pending records other than segments (Entry.Size summed); 0 = DefaultMaxBytes
	Policy   Policy       // when full; "" = RefuseNew
	Logger   *slog.Logger // nil = discard

	// SegmentMaxBytes is the budget of pending clip segments
	// (provenance.KindSegment), apart from MaxBytes: a segment that does not
	// fit evicts the oldest pending segments (deleted, logged and counted:
	// SpoolStats.Evicted, DroppedSegments), never another kind of record,
	// whatever the Policy; a segment larger than the whole budget is refused
	// with ErrFull. 0 = DefaultSegmentMaxBytes.
	SegmentMaxBytes int64

	// QuarantineMaxBytes bounds quarantine/ (records and their .reason
	// files): beyond it, the files quarantined longest ago are deleted, each
	// deletion logged and counted (SpoolStats.Pruned). 0 = MaxBytes, so the
	// spool never uses much more than twice MaxBytes of disk.
	QuarantineMaxBytes int64
}

// SpoolStats are the spool's counters. Counts are since OpenSpool.
type SpoolStats struct {
	Pending      int   // records waiting for upload
	Bytes        int64 // their size on disk
	Segments     int   // of the pending records: clip segments
	SegmentBytes int64 // their size on disk
	Evicted      int   // clip segments deleted unsent to keep within the segment budget
	Quarantined  int   // records moved to quarantine/, for any reason
	Corrupt      int   // of those: failed the framing or checksum check
	Dropped      int   // of those: pending records moved out by drop-oldest
	Refused      int   // Puts refused because the spool (or the segment budget) was full
	Pruned       int   // quarantined files deleted to keep quarantine/ bounded
	TempRemoved  int   // leftover temporary files removed at open
	Unknown      int   // entries in the spool directory found at open that are not records (left alone, never sent)
}

// A Spool is a directory of records waiting for upload, one file per record.
// It is safe for concurrent use.
type Spool struct {
	dir, qdir string
	max, qmax int64
	segMax    int64
	policy    Policy
	log       *slog.Logger
	notify    chan struct{}
	files     atomicfile.Writer // writes records; the zero Writer uses the operating system

	mu       sync.Mutex
	pending  map[uint64]Entry
	bytes    int64 // all pending records
	segBytes int64 // of those: segments
	segs     int
	qbytes   int64
	stats    SpoolStats

	// inflight is the record last loaded (the one the uploader is sending);
	// segment eviction spares it while another segment can go instead.
	inflight    Entry
	hasInflight bool
	// lostInflight is set when inflight was evicted while in flight: if it is
	// acknowledged after all, it is no longer counted as dropped.
	lostInflight bool
	// drops counts the segments dropped (evicted or refused) per event, for
	// the last maxDropEvents events that had any, in dropOrder.
	drops     map[string]int
	dropOrder []string
}

// File format: header, data, CRC-32C (Castagnoli) of header and data.
//
//	magic "KFSP" | version u8 = 1 | seq u64 | len(event) u8 | event |
//	len(kind) u8 | kind | len(data) u32 | data | crc32c u32
//
// Integers are big-endian. A file whose length, fields or checksum do not
// agree, or whose name does not match its header, is corrupt.
const (
	fileMagic   = "KFSP"
	fileVersion = 1
	fileExt     = ".kfr"
	// maxFileSize rejects files no spool ever wrote before reading them.
	maxFileSize = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenSpool opens (creating it if needed) the spool directory: it removes
// leftover temporary files, checks every record's framing and checksum,
// quarantines the bad ones and logs what it found.
func OpenSpool(cfg SpoolConfig) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("uploader: spool: no directory")
	}
	switch cfg.Policy {
	case "":
		cfg.Policy = RefuseNew
	case RefuseNew, DropOldest:
	default:
		return nil, fmt.Errorf("uploader: spool: unknown policy %q (want %q or %q)", cfg.Policy, RefuseNew, DropOldest)
	}
	if cfg.MaxBytes < 0 || cfg.QuarantineMaxBytes < 0 || cfg.SegmentMaxBytes < 0 {
		return nil, fmt.Errorf("uploader: spool: negative bound (max %d, quarantine max %d, segment max %d)", cfg.MaxBytes, cfg.QuarantineMaxBytes, cfg.SegmentMaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.SegmentMaxBytes == 0 {
		cfg.SegmentMaxBytes = DefaultSegmentMaxBytes
	}
	if cfg.QuarantineMaxBytes == 0 {
		cfg.QuarantineMaxBytes = cfg.MaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		dir:     cfg.Dir,
		qdir:    filepath.Join(cfg.Dir, QuarantineDir),
		max:     cfg.MaxBytes,
		segMax:  cfg.SegmentMaxBytes,
		qmax:    cfg.QuarantineMaxBytes,
		policy:  cfg.Policy,
		log:     cfg.Logger,
		notify:  make(chan struct{}, 1),
		pending: make(map[uint64]Entry),
		drops:   make(map[string]int),
	}
	if err := os.MkdirAll(s.qdir, 0o700); err != nil {
		return nil, fmt.Errorf("uploader: spool: %w", err)
	}
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log.Info("uploader: spool opened", "dir", s.dir, "pending", len(s.pending), "bytes", s.bytes,
		"max_bytes", s.max, "policy", string(s.policy), "segments", s.segs, "segment_bytes", s.segBytes,
		"segment_max_bytes", s.segMax, "temp_removed", s.stats.TempRemoved,
		"quarantined", s.stats.Quarantined, "quarantine_bytes", s.qbytes, "unknown_files", s.stats.Unknown)
	if s.bytes-s.segBytes > s.max {
		s.log.Warn("uploader: spool holds more than its bound; new records follow the policy until it drains",
			"bytes", s.bytes-s.segBytes, "max_bytes", s.max, "policy", string(s.policy))
	}
	if s.segBytes > s.segMax {
		s.log.Warn("uploader: spool holds more clip segments than their budget; the oldest are evicted as new ones come",
			"segment_bytes", s.segBytes, "segment_max_bytes", s.segMax)
	}
	return s, nil
}

// scan loads the directory at open.
func (s *Spool) scan() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("uploader: spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	removed := false
	for _, de := range ents {
		name := de.Name()
		switch {
		case name == QuarantineDir:
			continue
		case isTemp(name):
			// An atomicfile temp file: a Put that never completed, so never
			// acknowledged to its caller.
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("uploader: spool: remove temp file: %w", err)
			}
			s.stats.TempRemoved++
			removed = true
			s.log.Info("uploader: removed leftover temp file", "file", name)
			continue
		case !strings.HasSuffix(name, fileExt) || !de.Type().IsRegular():
			// Not a record: left in place (the spool directory may be
			// shared, e.g. with the device key and chain state), never
			// read or sent, but counted and logged.
			s.stats.Unknown++
			s.log.Warn("uploader: ignoring unknown file in spool", "file", name, "unknown", s.stats.Unknown)
			continue
		}
		e, err := s.check(name)
		if err == nil {
			if old, dup := s.pending[e.Seq]; dup {
				err = fmt.Errorf("sequence %d already spooled as %s", e.Seq, fileName(old))
			}
		}
		if err != nil {
			if qerr := s.quarantineLocked(name, nil, "corrupt at open: "+err.Error(), true); qerr != nil {
				return qerr
			}
			continue
		}
		s.addLocked(e)
	}
	if removed {
		if err := atomicfile.SyncDir(s.dir); err != nil {
			return fmt.Errorf("uploader: spool: %w", err)
		}
	}
	// Measure quarantine/ from scratch (the loop above may have added to
	// it), removing temp files of reasons whose write was cut off.
	qents, err := os.ReadDir(s.qdir)
	if err != nil {
		return fmt.Errorf("uploader: spool: %w", err)
	}
	s.qbytes = 0
	for _, de := range qents {
		if isTemp(de.Name()) {
			if err := os.Remove(filepath.Join(s.qdir, de.Name())); err != nil {
				return fmt.Errorf("uploader: spool: remove temp file: %w", err)
			}
			s.stats.TempRemoved++
			continue
		}
		if info, err := de.Info(); err == nil && info.Mode().IsRegular() {
			s.qbytes += info.Size()
		}
	}
	return s.pruneLocked()
}

// isTemp reports whether name is an atomicfile temporary file.
func isTemp(name string) bool { return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") }

// check reads and verifies the named file and returns its entry.
func (s *Spool) check(name string) (Entry, error) {
	_, e, err := s.read(name)
	return e, err
}

// read reads the named file, verifies it and checks its name agrees.
func (s *Spool) read(name string) (Record, Entry, error) {
	p := filepath.Join(s.dir, name)
	f, err := os.Open(p)
	if err != nil {
		return Record{}, Entry{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return Record{}, Entry{}, err
	}
	if info.Size() > maxFileSize {
		return Record{}, Entry{}, fmt.Errorf("%w: %d bytes, larger than any record", ErrCorrupt, info.Size())
	}
	buf := make([]byte, info.Size())
	if n, err := io.ReadFull(f, buf); err != nil {
		return Record{}, Entry{}, fmt.Errorf("%w: short read (%d of %d bytes): %w", ErrCorrupt, n, len(buf), err)
	}
	r, err := decodeFile(buf)
	if err != nil {
		return Record{}, Entry{}, err
	}
	if want := fileName(Entry{Seq: r.Seq, Event: r.Event, Kind: r.Kind}); name != want {
		return Record{}, Entry{}, fmt.Errorf("%w: file name does not match its header (want %s)", ErrCorrupt, want)
	}
	return r, Entry{Seq: r.Seq, Event: r.Event, Kind: r.Kind, Size: int64(len(buf))}, nil
}

// fileName is the record's file name: sortable by sequence number.
func fileName(e Entry) string {
	return fmt.Sprintf("%020d-%s-%s%s", e.Seq, e.Event, e.Kind, fileExt)
}

func validKind(k string) bool { return provenance.ValidKind(k) }

func checkRecord(r *Record) error {
	switch {
	case !provenance.ValidID(r.Event):
		return fmt.Errorf("uploader: spool: event ID %q is not 1-64 characters of [A-Za-z0-9_-]", r.Event)
	case !validKind(r.Kind):
		return fmt.Errorf("uploader: spool: kind %q is not a record kind (%q, %q, %q or %q)", r.Kind, provenance.KindStart, provenance.KindEnd, provenance.KindRotate, provenance.KindSegment)
	case len(r.Data) == 0:
		return fmt.Errorf("uploader: spool: record %d has no data", r.Seq)
	case len(r.Data) > maxFileSize-128:
		return fmt.Errorf("uploader: spool: record %d is %d bytes, too large", r.Seq, len(r.Data))
	}
	return nil
}

func encodeFile(r *Record) []byte {
	b := make([]byte, 0, 4+1+8+1+len(r.Event)+1+len(r.Kind)+4+len(r.Data)+4)
	b = append(b, fileMagic...)
	b = append(b, fileVersion)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = append(b, byte(len(r.Event)))
	b = append(b, r.Event...)
	b = append(b, byte(len(r.Kind)))
	b = append(b, r.Kind...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
	b = append(b, r.Data...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeFile(b []byte) (Record, error) {
	bad := func(why string, args ...any) (Record, error) {
		return Record{}, fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(why, args...))
	}
	if len(b) < 4+1+8+1 {
		return bad("%d bytes, shorter than a header", len(b))
	}
	if string(b[:4]) != fileMagic {
		return bad("bad magic %q", b[:4])
	}
	if b[4] != fileVersion {
		return bad("version %d, want %d", b[4], fileVersion)
	}
	// The checksum covers everything else, so check it first: a torn or
	// flipped file is reported as such rather than by whichever field broke.
	body := b[:len(b)-4]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(b[len(b)-4:]); got != want {
		return bad("checksum %08x, file says %08x (torn or bit-flipped)", got, want)
	}
	var r Record
	r.Seq = binary.BigEndian.Uint64(b[5:13])
	rest := body[13:]
	str := func() (string, bool) {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return "", false
		}
		n := int(rest[0])
		v := string(rest[1 : 1+n])
		rest = rest[1+n:]
		return v, true
	}
	var ok bool
	if r.Event, ok = str(); !ok || !provenance.ValidID(r.Event) {
		return bad("bad event field")
	}
	if r.Kind, ok = str(); !ok || !validKind(r.Kind) {
		return bad("bad kind field")
	}
	if len(rest) < 4 {
		return bad("no data length")
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint64(len(rest)) != uint64(n) || n == 0 {
		return bad("data length %d, file holds %d", n, len(rest))
	}
	r.Data = bytes.Clone(rest)
	return r, nil
}

// Put stores r durably: when Put returns nil the record survives a crash or
// power cut. Putting a sequence number that is already pending replaces it
// only if event and kind agree (a re-spool of the same record); otherwise it
// is an error. When the spool is full the policy applies (see Policy).
func (s *Spool) Put(r Record) error {
	if err := checkRecord(&r); err != nil {
		return err
	}
	b := encodeFile(&r)
	e := Entry{Seq: r.Seq, Event: r.Event, Kind: r.Kind, Size: int64(len(b))}
	s.mu.Lock()
	defer s.mu.Unlock()
	var replaced int64
	if old, ok := s.pending[r.Seq]; ok {
		if old.Event != r.Event || old.Kind != r.Kind {
			return fmt.Errorf("uploader: spool: sequence %d is already pending as %s/%s, not %s/%s",
				r.Seq, old.Event, old.Kind, r.Event, r.Kind)
		}
		replaced = old.Size
	}
	room := s.makeRoomLocked
	if e.Kind == provenance.KindSegment {
		room = s.makeSegmentRoomLocked
	}
	if err := room(e, replaced); err != nil {
		return err
	}
	if err := s.files.WriteFile(filepath.Join(s.dir, fileName(e)), b, 0o600); err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// The filesystem filled up before the bound: the record is
			// refused like one over the bound (atomicfile removed its temp
			// file), counted and logged. No policy can make room here:
			// quarantine/ is on the same filesystem.
			s.stats.Refused++
			s.log.Error("uploader: spool's filesystem is full, record refused", "seq", e.Seq, "event", e.Event,
				"kind", e.Kind, "size", e.Size, "pending", len(s.pending), "bytes", s.bytes, "max_bytes", s.max,
				"refused", s.stats.Refused, "err", err)
			return fmt.Errorf("uploader: spool: put %d: %w: filesystem full: %w", r.Seq, ErrFull, err)
		}
		return fmt.Errorf("uploader: spool: put %d: %w", r.Seq, err)
	}
	if old, ok := s.pending[e.Seq]; ok {
		s.forgetLocked(old)
	}
	s.addLocked(e)
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// addLocked adds e to the pending records and their sums.
func (s *Spool) addLocked(e Entry) {
	s.pending[e.Seq] = e
	s.bytes += e.Size
	if e.Kind == provenance.KindSegment {
		s.segBytes += e.Size
		s.segs++
	}
}

// forgetLocked removes the pending entry e from the pending records and
// their sums.
func (s *Spool) forgetLocked(e Entry) {
	delete(s.pending, e.Seq)
	s.bytes -= e.Size
	if e.Kind == provenance.KindSegment {
		s.segBytes -= e.Size
		s.segs--
	}
}

// makeRoomLocked applies the policy so that e, a record other than a
// segment, fits. Segments are not counted and never dropped for it.
func (s *Spool) makeRoomLocked(e Entry, replaced int64) error {
	used := s.bytes - s.segBytes
	if used-replaced+e.Size <= s.max {
		return nil
	}
	refuse := func(why string) error {
		s.stats.Refused++
		s.log.Error("uploader: spool full, record refused", "seq", e.Seq, "event", e.Event, "kind", e.Kind,
			"size", e.Size, "pending", len(s.pending), "bytes", s.bytes, "max_bytes", s.max,
			"policy", string(s.policy), "refused", s.stats.Refused, "why", why)
		return fmt.Errorf("uploader: spool: record %d (%d bytes): %w: %s", e.Seq, e.Size, ErrFull, why)
	}
	if e.Size > s.max {
		return refuse("the record alone is larger than the bound")
	}
	if s.policy != DropOldest {
		return refuse(fmt.Sprintf("%d bytes pending, bound %d", used, s.max))
	}
	for s.bytes-s.segBytes-replaced+e.Size > s.max {
		oldest, ok := s.oldestLocked(e.Seq, true, false)
		if !ok {
			break // only e's own previous version is left; it is being replaced
		}
		if err := s.quarantineLocked(fileName(oldest), &oldest, "spool full", false); err != nil {
			return fmt.Errorf("uploader: spool: drop oldest: %w", err)
		}
		s.stats.Dropped++
		s.log.Warn("uploader: spool full, oldest unsent record moved to quarantine", "seq", oldest.Seq,
			"event", oldest.Event, "kind", oldest.Kind, "size", oldest.Size, "dropped", s.stats.Dropped,
			"pending", len(s.pending), "bytes", s.bytes, "max_bytes", s.max)
	}
	return nil
}

// makeSegmentRoomLocked makes room for the segment e within the segment
// budget: the oldest pending segments are deleted (evicted) until it fits,
// the one in flight last. Only a segment larger than the whole budget is
// refused.
func (s *Spool) makeSegmentRoomLocked(e Entry, replaced int64) error {
	if s.segBytes-replaced+e.Size <= s.segMax {
		return nil
	}
	if e.Size > s.segMax {
		s.stats.Refused++
		n := s.dropLocked(e.Event)
		s.log.Error("uploader: clip segment refused: larger than the whole segment budget", "seq", e.Seq,
			"event", e.Event, "size", e.Size, "segment_max_bytes", s.segMax, "event_segments_dropped", n,
			"refused", s.stats.Refused)
		return fmt.Errorf("uploader: spool: segment %d (%d bytes): %w: larger than the segment budget of %d bytes", e.Seq, e.Size, ErrFull, s.segMax)
	}
	evicted := false
	for s.segBytes-replaced+e.Size > s.segMax {
		oldest, ok := s.oldestLocked(e.Seq, true, true)
		if !ok {
			break // only e's own previous version is left; it is being replaced
		}
		if err := os.Remove(filepath.Join(s.dir, fileName(oldest))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("uploader: spool: evict segment %d: %w", oldest.Seq, err)
		}
		s.forgetLocked(oldest)
		evicted = true
		if s.hasInflight && s.inflight == oldest {
			s.lostInflight = true
		}
		s.stats.Evicted++
		n := s.dropLocked(oldest.Event)
		s.log.Warn("uploader: segment budget full: oldest clip segment deleted, not delivered",
			"seq", oldest.Seq, "event", oldest.Event, "size", oldest.Size, "event_segments_dropped", n,
			"evicted", s.stats.Evicted, "segment_bytes", s.segBytes, "segment_max_bytes", s.segMax)
	}
	if evicted {
		if err := atomicfile.SyncDir(s.dir); err != nil {
			return fmt.Errorf("uploader: spool: evict segments: %w", err)
		}
	}
	return nil
}

// dropLocked counts one dropped segment of event and returns its count.
func (s *Spool) dropLocked(event string) int {
	if _, ok := s.drops[event]; !ok {
		if len(s.dropOrder) >= maxDropEvents {
			delete(s.drops, s.dropOrder[0])
			s.dropOrder = s.dropOrder[1:]
		}
		s.dropOrder = append(s.dropOrder, event)
	}
	s.drops[event]++
	return s.drops[event]
}

// DroppedSegments returns how many clip segments of event the spool dropped
// (evicted to stay within the segment budget, or refused as larger than
// it) since OpenSpool: segments that will not be delivered. Counts are kept
// for the last 256 events with drops.
func (s *Spool) DroppedSegments(event string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops[event]
}

// oldestLocked returns the pending entry with the lowest sequence number,
// other than skip (if hasSkip). With segments it returns the oldest segment,
// sparing the one in flight while another is pending.
func (s *Spool) oldestLocked(skip uint64, hasSkip, segments bool) (Entry, bool) {
	var best Entry
	found, spared := false, false
	for seq, e := range s.pending {
		switch {
		case hasSkip && seq == skip, segments && e.Kind != provenance.KindSegment:
			continue
		case segments && s.hasInflight && e == s.inflight:
			spared = true
			continue
		}
		if !found || seq < best.Seq {
			best, found = e, true
		}
	}
	if !found && spared {
		return s.inflight, true
	}
	return best, found
}

// Next returns the pending record to send next: the oldest record other
// than a segment (start, end and rotate records, with their thumbnails) or,
// when none is pending, the oldest segment.
func (s *Spool) Next() (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best Entry
	found := false
	for seq, e := range s.pending {
		if !found || (e.Kind == provenance.KindSegment) == (best.Kind == provenance.KindSegment) && seq < best.Seq ||
			e.Kind != provenance.KindSegment && best.Kind == provenance.KindSegment {
			best, found = e, true
		}
	}
	return best, found
}

// Pending returns the pending entries in sequence order.
func (s *Spool) Pending() []Entry {
	s.mu.Lock()
	out := make([]Entry, 0, len(s.pending))
	for _, e := range s.pending {
		out = append(out, e)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out
}

// Oldest returns the pending entry with the lowest sequence number, if any.
func (s *Spool) Oldest() (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oldestLocked(0, false, false)
}

// Load reads a pending record and checks it. A file that fails its framing or
// checksum is quarantined and counted, and the error wraps ErrCorrupt; it is
// never returned as valid. If it cannot be quarantined (the quarantine
// directory cannot be written), it stays pending and the error does not wrap
// ErrCorrupt.
func (s *Spool) Load(e Entry) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.pending[e.Seq]
	if !ok || cur.Event != e.Event || cur.Kind != e.Kind {
		return Record{}, fmt.Errorf("uploader: spool: load %d: %w", e.Seq, ErrNotPending)
	}
	name := fileName(cur)
	r, got, err := s.read(name)
	if err == nil && got.Size != cur.Size {
		err = fmt.Errorf("%w: %d bytes, spooled as %d", ErrCorrupt, got.Size, cur.Size)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: file vanished", ErrCorrupt)
			// Nothing to move: forget the entry, count it, say so.
			s.forgetLocked(cur)
			s.stats.Quarantined++
			s.stats.Corrupt++
			s.log.Error("uploader: spooled record vanished", "seq", cur.Seq, "event", cur.Event, "kind", cur.Kind)
			return Record{}, fmt.Errorf("uploader: spool: load %d: %w", e.Seq, err)
		}
		if !errors.Is(err, ErrCorrupt) {
			return Record{}, fmt.Errorf("uploader: spool: load %d: %w", e.Seq, err)
		}
		if qerr := s.quarantineLocked(name, &cur, err.Error(), true); qerr != nil {
			// Still pending: not ErrCorrupt (whose promise is that the file
			// was quarantined), a local failure the caller retries later.
			return Record{}, fmt.Errorf("uploader: spool: load %d: corrupt (%v), and it cannot be quarantined: %w", e.Seq, err, qerr)
		}
		return Record{}, fmt.Errorf("uploader: spool: load %d: %w", e.Seq, err)
	}
	s.inflight, s.hasInflight, s.lostInflight = cur, true, false
	return r, nil
}

// Ack removes a record the receiver acknowledged. If the record was moved to
// quarantine meanwhile (drop-oldest while it was in flight), the quarantined
// copy is removed instead, since it was delivered.
func (s *Spool) Ack(e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.pending[e.Seq]
	if !ok || cur.Event != e.Event || cur.Kind != e.Kind {
		if s.hasInflight && s.lostInflight && s.inflight.Seq == e.Seq && s.inflight.Event == e.Event && s.inflight.Kind == e.Kind {
			// Evicted while it was being sent, and delivered all the same.
			s.hasInflight, s.lostInflight = false, false
			s.stats.Evicted--
			if s.drops[e.Event] > 0 {
				s.drops[e.Event]--
			}
			s.log.Info("uploader: clip segment evicted while in flight was delivered after all", "seq", e.Seq,
				"event", e.Event, "event_segments_dropped", s.drops[e.Event])
			return nil
		}
		name := fileName(e)
		q := filepath.Join(s.qdir, name)
		if _, err := os.Stat(q); err == nil {
			if err := s.removeQuarantinedLocked(name); err != nil {
				return err
			}
			s.log.Info("uploader: delivered record removed from quarantine", "seq", e.Seq, "event", e.Event, "kind", e.Kind)
			return nil
		}
		return fmt.Errorf("uploader: spool: ack %d: %w", e.Seq, ErrNotPending)
	}
	if err := os.Remove(filepath.Join(s.dir, fileName(cur))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("uploader: spool: ack %d: %w", e.Seq, err)
	}
	s.forgetLocked(cur)
	if s.hasInflight && s.inflight == cur {
		s.hasInflight = false
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("uploader: spool: ack %d: %w", e.Seq, err)
	}
	return nil
}

// Quarantine moves a pending record to quarantine/ with a .reason file beside
// it, counts and logs it.
func (s *Spool) Quarantine(e Entry, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.pending[e.Seq]
	if !ok || cur.Event != e.Event || cur.Kind != e.Kind {
		return fmt.Errorf("uploader: spool: quarantine %d: %w", e.Seq, ErrNotPending)
	}
	return s.quarantineLocked(fileName(cur), &cur, reason, false)
}

// quarantineLocked moves dir/name to quarantine/ with its reason. pending is
// the entry it held, nil for a file found bad at open.
func (s *Spool) quarantineLocked(name string, pending *Entry, reason string, corrupt bool) error {
	src := filepath.Join(s.dir, name)
	info, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("uploader: spool: quarantine %s: %w", name, err)
	}
	dst := name
	for i := 1; ; i++ {
		_, err := os.Lstat(filepath.Join(s.qdir, dst))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			// Not "taken" but unreadable (quarantine/ is not a directory,
			// an I/O error): trying other names would loop for ever.
			return fmt.Errorf("uploader: spool: quarantine %s: %w", name, err)
		}
		dst = name + "." + strconv.Itoa(i)
	}
	reasonText := []byte(printableLine(reason) + "\n")
	// The reason first: a crash between the two leaves a reason without its
	// file (harmless), never a quarantined file without a reason. If the
	// reason cannot be written (the disk is full), the file is moved all the
	// same and the reason is only in the log: a bad file must not stay in
	// the spool, and a full disk must not keep the spool from opening.
	if err := atomicfile.WriteFile(filepath.Join(s.qdir, dst+".reason"), reasonText, 0o600); err != nil {
		s.log.Error("uploader: cannot write the quarantine reason file; the reason is only in this log",
			"file", name, "reason", reason, "err", err)
		reasonText = nil
	}
	if err := os.Rename(src, filepath.Join(s.qdir, dst)); err != nil {
		return fmt.Errorf("uploader: spool: quarantine %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(s.qdir); err != nil {
		return fmt.Errorf("uploader: spool: quarantine %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("uploader: spool: quarantine %s: %w", name, err)
	}
	if pending != nil {
		if cur, ok := s.pending[pending.Seq]; ok {
			s.forgetLocked(cur)
		}
	}
	s.qbytes += info.Size() + int64(len(reasonText))
	s.stats.Quarantined++
	if corrupt {
		s.stats.Corrupt++
	}
	s.log.Warn("uploader: record quarantined", "file", name, "reason", reason,
		"quarantined", s.stats.Quarantined, "corrupt", s.stats.Corrupt)
	return s.pruneLocked()
}

// pruneLocked deletes the files quarantined longest ago (by the time of their
// .reason file, then by name) while quarantine/ is over its bound.
func (s *Spool) pruneLocked() error {
	if s.qbytes <= s.qmax {
		return nil
	}
	ents, err := os.ReadDir(s.qdir)
	if err != nil {
		return fmt.Errorf("uploader: spool: prune quarantine: %w", err)
	}
	type group struct {
		key   string // the record's file name; its reason is key+".reason"
		size  int64
		when  int64 // quarantine time (unix ns)
		files []string
	}
	groups := map[string]*group{}
	var total int64
	for _, de := range ents {
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		name := de.Name()
		key := strings.TrimSuffix(name, ".reason")
		g := groups[key]
		if g == nil {
			g = &group{key: key}
			groups[key] = g
		}
		g.size += info.Size()
		g.files = append(g.files, name)
		if t := info.ModTime().UnixNano(); strings.HasSuffix(name, ".reason") || g.when == 0 {
			g.when = t
		}
		total += info.Size()
	}
	s.qbytes = total
	order := make([]*group, 0, len(groups))
	for _, g := range groups {
		order = append(order, g)
	}
	slices.SortFunc(order, func(a, b *group) int {
		if a.when != b.when {
			if a.when < b.when {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	for _, g := range order {
		if s.qbytes <= s.qmax {
			break
		}
		for _, f := range g.files {
			if err := os.Remove(filepath.Join(s.qdir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("uploader: spool: prune quarantine: %w", err)
			}
		}
		s.qbytes -= g.size
		s.stats.Pruned++
		s.log.Warn("uploader: quarantine over its bound, oldest quarantined file deleted", "file", g.key,
			"size", g.size, "pruned", s.stats.Pruned, "quarantine_bytes", s.qbytes, "quarantine_max_bytes", s.qmax)
	}
	if err := atomicfile.SyncDir(s.qdir); err != nil {
		return fmt.Errorf("uploader: spool: prune quarantine: %w", err)
	}
	return nil
}

// removeQuarantinedLocked deletes a quarantined record and its reason.
func (s *Spool) removeQuarantinedLocked(name string) error {
	for _, f := range []string{name, name + ".reason"} {
		p := filepath.Join(s.qdir, f)
		info, err := os.Stat(p)
		if err != nil {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("uploader: spool: %w", err)
		}
		s.qbytes -= info.Size()
	}
	if err := atomicfile.SyncDir(s.qdir); err != nil {
		return fmt.Errorf("uploader: spool: %w", err)
	}
	return nil
}

// printableLine flattens s to one printable line of at most 512 bytes: each
// control character becomes a space, the ends are trimmed.
func printableLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return strings.TrimSpace(s)
}

// Stats returns the spool's counters.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Pending = len(s.pending)
	st.Bytes = s.bytes
	st.Segments = s.segs
	st.SegmentBytes = s.segBytes
	return st
}

// Notify returns a channel that receives a value (without blocking Put; it
// holds at most one) after each successful Put.
func (s *Spool) Notify() <-chan struct{} { return s.notify }
