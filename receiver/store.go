package receiver

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/provenance"
)

// The store keeps every verified record as files under
// Dir/events/<device>/: <event>-<name>.cose (the envelope, byte for byte as
// received) and <event>-<name>.<i>.<ext> (media by index, e.g. .0.jpg, .0.sealed),
// where the name is the kind ("start", "end", "rotate") or, for a segment
// record, "segment-<index>" (its frames: <event>-segment-3.0.mjpeg). An
// append-only index, Dir/index.jsonl, holds one JSON line per stored record;
// a record counts as stored once its index line is on disk (files first, then
// the line, each fsynced). The index is read back into memory by Open, and
// the highest sequence number per device, which the replay check needs, is
// derived from it.

const (
	indexFile  = "index.jsonl"
	eventsDir  = "events"
	serverLock = "server.lock"
)

// indexEntry is one line of the index.
type indexEntry struct {
	Device     string       `json:"device"`
	Event      string       `json:"event"`
	Kind       string       `json:"kind"`
	Seq        uint64       `json:"seq"`
	TimeUnixMs int64        `json:"time_unix_ms"` // capture time from the payload
	Clock      string       `json:"clock"`        // provenance.ClockSynced or ClockUnsynced
	Boot       string       `json:"boot"`
	KeyStore   string       `json:"keystore"`
	DurationMs uint64       `json:"duration_ms"`
	PeakPPM    uint32       `json:"peak_area_ppm"`
	Media      []indexMedia `json:"media"`
	Envelope   string       `json:"envelope_sha256"` // hex SHA-256 of the envelope bytes
	ReceivedAt time.Time    `json:"received_at"`
	NextDevice string       `json:"next_device,omitempty"` // a rotate record: the device ID of the new key
	Source     *indexSource `json:"source,omitempty"`      // the frames' source the payload names; nil: none named
	Segment    *uint32      `json:"segment,omitempty"`     // a segment record: its signed segment.index

	deleted bool // named in deleted.jsonl (retention.go): shown to no one
}

// indexSource is a record's signed frame source (provenance.Source).
type indexSource struct {
	Kind string `json:"kind"`
	Name string `json:"name,omitempty"`
	Bus  string `json:"bus,omitempty"`
}

// fromCamera reports whether the record names a camera as its source.
func (e *indexEntry) fromCamera() bool {
	return e.Source != nil && (&provenance.Source{Kind: e.Source.Kind}).FromCamera()
}

// sourceText says where a record's frames came from, for pages and lines.
func (e *indexEntry) sourceText() string {
	s := e.Source
	switch {
	case s == nil:
		return "source not stated"
	case s.Kind == provenance.SourceV4L2:
		return strings.TrimSpace("camera " + s.Name + " " + s.Bus)
	case s.Kind == provenance.SourceExec:
		return "camera via command " + s.Name
	case s.Kind == provenance.SourceSynthetic:
		return "synthetic scene"
	case s.Kind == provenance.SourceImages:
		return "still images " + s.Name
	}
	return "source " + s.Kind
}

// indexMedia describes one stored media object.
type indexMedia struct {
	Role   string `json:"role"`
	Type   string `json:"type"`
	Size   uint64 `json:"size"`
	SHA256 string `json:"sha256"` // hex, from the verified payload
}

// key identifies a record: a device's event and name.
func (e *indexEntry) key() string { return recordKey(e.Device, e.Event, e.name()) }

// name names a record among its event's: its kind, and for a segment
// record "segment-" and its index ("segment-0", "segment-1", ...), since an
// event has one start and one end but many segments. Files, URLs and
// deletions name a record by it.
func (e *indexEntry) name() string {
	if e.Segment != nil {
		return segmentName(*e.Segment)
	}
	return e.Kind
}

// segmentName is the name of segment index of an event.
func segmentName(index uint32) string {
	return provenance.KindSegment + "-" + strconv.FormatUint(uint64(index), 10)
}

func recordKey(device, event, kind string) string { return device + "/" + event + "/" + kind }

// check validates the fields that become file names and the hashes.
func (e *indexEntry) check() error {
	switch {
	case !provenance.ValidID(e.Device):
		return fmt.Errorf("device %q is not a valid ID", e.Device)
	case !provenance.ValidID(e.Event):
		return fmt.Errorf("event %q is not a valid ID", e.Event)
	case !provenance.ValidKind(e.Kind):
		return fmt.Errorf("kind %q is not start, end, segment or rotate", e.Kind)
	case e.Segment != nil && e.Kind != provenance.KindSegment:
		// A segment line without its index was written by a receiver
		// that stored one segment per event (its files are named by the
		// kind alone); it is read as it was stored.
		return fmt.Errorf("segment index %d with kind %q (only a segment record has one)", *e.Segment, e.Kind)
	case (e.Kind == provenance.KindRotate) != (e.NextDevice != ""):
		return fmt.Errorf("next_device %q with kind %q (a rotate record has one, other kinds none)", e.NextDevice, e.Kind)
	case e.NextDevice != "" && !ValidDeviceID(e.NextDevice):
		return fmt.Errorf("next_device %q is not a device ID", e.NextDevice)
	}
	if b, err := hex.DecodeString(e.Envelope); err != nil || len(b) != 32 {
		return fmt.Errorf("envelope_sha256 %q is not a hex SHA-256", e.Envelope)
	}
	for i, m := range e.Media {
		if b, err := hex.DecodeString(m.SHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("media[%d].sha256 %q is not a hex SHA-256", i, m.SHA256)
		}
	}
	return nil
}

// entryFromVerified builds the index line for a verified record.
func entryFromVerified(v *provenance.Verified, received time.Time) *indexEntry {
	p := v.Payload
	e := &indexEntry{
		Device:     v.Device,
		Event:      p.Event,
		Kind:       p.Kind,
		Seq:        p.Seq,
		TimeUnixMs: p.Time.UnixMs,
		Clock:      p.Time.Clock,
		Boot:       p.Boot,
		KeyStore:   p.KeyStore,
		DurationMs: p.Motion.DurationMs,
		PeakPPM:    p.Motion.PeakAreaPPM,
		Media:      make([]indexMedia, len(p.Media)),
		Envelope:   hex.EncodeToString(v.Hash[:]),
		ReceivedAt: received.UTC(),
		NextDevice: v.NextDevice,
	}
	if s := p.Source; s != nil {
		e.Source = &indexSource{Kind: s.Kind, Name: s.Name, Bus: s.Bus}
	}
	if p.Kind == provenance.KindSegment && p.Segment != nil {
		idx := p.Segment.Index
		e.Segment = &idx
	}
	for i, m := range p.Media {
		e.Media[i] = indexMedia{Role: m.Role, Type: m.Type, Size: m.Size, SHA256: hex.EncodeToString(m.SHA256)}
	}
	return e
}

// mediaExt is the file extension for a media type.
func mediaExt(typ string) string {
	switch typ {
	case "image/jpeg":
		return "jpg"
	case "image/png":
		return "png"
	case provenance.ProofMediaType:
		return "cose"
	case provenance.FramesMediaType:
		return "mjpeg"
	case provenance.H264MediaType:
		return "h264" // an H.264 segment's frames, and each of them in records.zip
	case sealedType:
		return "sealed" // ciphertext only the owner's browsers open (docs/e2ee.md)
	}
	return "bin"
}

// envelopePath is where a record's envelope is stored.
func envelopePath(dir string, e *indexEntry) string {
	return filepath.Join(dir, eventsDir, e.Device, e.Event+"-"+e.name()+".cose")
}

// mediaPath is where a record's i-th media object is stored.
func mediaPath(dir string, e *indexEntry, i int) string {
	return filepath.Join(dir, eventsDir, e.Device, e.Event+"-"+e.name()+"."+strconv.Itoa(i)+"."+mediaExt(e.Media[i].Type))
}

// indexHandle is the open index: an *os.File, or in a test one that records
// the order of its appends and fsyncs.
type indexHandle interface {
	io.Writer
	io.Seeker
	Sync() error
	Truncate(size int64) error
	Close() error
}

// writeRecordFiles stores a record's envelope and media durably with w.
func writeRecordFiles(w atomicfile.Writer, dir string, e *indexEntry, envelope []byte, media [][]byte) error {
	devDir := filepath.Join(dir, eventsDir, e.Device)
	if err := mkdirDurable(devDir); err != nil {
		return err
	}
	for i, m := range media {
		if err := w.WriteFile(mediaPath(dir, e, i), m, 0o600); err != nil {
			return fmt.Errorf("receiver: store media: %w", err)
		}
	}
	if err := w.WriteFile(envelopePath(dir, e), envelope, 0o600); err != nil {
		return fmt.Errorf("receiver: store envelope: %w", err)
	}
	return nil
}

// mkdirDurable creates dir and any missing parents, fsyncing each parent whose
// entries changed.
func mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirDurable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("receiver: %w", err)
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	return nil
}

// indexLine is one parsed index line, or why it could not be parsed.
type indexLine struct {
	n     int // 1-based line number
	entry *indexEntry
	err   error
}

// parsedIndex is the content of an index file.
type parsedIndex struct {
	lines []indexLine
	// goodLen is the length of the file up to the end of the last line that is
	// not torn; torn describes the torn last line, if there is one.
	goodLen int64
	torn    error
}

// parseIndex splits an index file into lines. A last line that does not parse
// or has no newline is torn (a crash during an append, never acknowledged): it
// is reported in torn, not in lines. Duplicate records are errors on the later
// line.
func parseIndex(data []byte) *parsedIndex {
	pi := &parsedIndex{}
	seen := map[string]int{}
	var off int64
	n := 0
	for len(data) > 0 {
		n++
		i := bytes.IndexByte(data, '\n')
		line, terminated := data, false
		if i >= 0 {
			line, terminated = data[:i], true
		}
		next := data[len(line):]
		if terminated {
			next = data[i+1:]
		}
		last := len(next) == 0
		e, err := parseIndexLine(line)
		if err == nil && !terminated {
			err = errors.New("no newline at the end")
		}
		if err != nil && last {
			pi.torn = fmt.Errorf("line %d: %w", n, err)
			break
		}
		if err == nil {
			if prev, dup := seen[e.key()]; dup {
				err = fmt.Errorf("duplicate of line %d (%s)", prev, e.key())
			} else {
				seen[e.key()] = n
			}
		}
		pi.lines = append(pi.lines, indexLine{n: n, entry: e, err: err})
		off += int64(len(data) - len(next))
		data = next
	}
	pi.goodLen = off
	return pi
}

func parseIndexLine(line []byte) (*indexEntry, error) {
	var e indexEntry
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the record")
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}
