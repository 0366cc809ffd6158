package receiver

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyframe-cam/keyframe/provenance"
)

// Report is the result of CheckStore.
type Report struct {
	Records  int       // index lines that name a record (good or bad)
	Verified int       // records that passed every check
	Deleted  int       // records deleted (by their owner or by retention): their files are gone by design
	Problems []Problem // one per record (or index line) that failed
	// Torn describes a torn last index line (a crash during an append, never
	// acknowledged to the device); it is not a failure. Empty if none.
	Torn string
}

// OK reports whether every record verified.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Problem is one record that failed CheckStore.
type Problem struct {
	Line   int    // index line
	Device string // empty if the line could not be parsed
	Event  string
	Kind   string
	Reason string
}

func (p Problem) String() string {
	if p.Device == "" {
		return fmt.Sprintf("index line %d: %s", p.Line, p.Reason)
	}
	return fmt.Sprintf("event=%s kind=%s device=%s: %s", p.Event, p.Kind, p.Device, p.Reason)
}

// CheckStore re-verifies, offline, every record stored in the data directory
// dir: it reads each envelope and its media from disk and checks them with
// provenance.Verify, checks that the signer is enrolled under that very key,
// and that the index line agrees with the signed payload (device, event,
// kind, sequence, envelope and media hashes). Every failure is reported as a
// Problem naming the record; the error is for a store that cannot be read at
// all. It takes no lock and may run while a receiver serves dir.
func CheckStore(dir string) (Report, error) {
	var rep Report
	if st, err := os.Stat(dir); err != nil {
		return rep, fmt.Errorf("receiver: check: %w", err)
	} else if !st.IsDir() {
		return rep, fmt.Errorf("receiver: check: %s is not a directory", dir)
	}
	reg, err := loadRegistry(dir)
	if err != nil {
		return rep, err
	}
	data, err := os.ReadFile(filepath.Join(dir, indexFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, fmt.Errorf("receiver: check: %w", err)
	}
	pi := parseIndex(data)
	if pi.torn != nil {
		rep.Torn = pi.torn.Error()
	}
	deleted, _, err := readDeletions(dir)
	if err != nil {
		return rep, err
	}
	for _, l := range pi.lines {
		rep.Records++
		if l.err != nil {
			p := Problem{Line: l.n, Reason: "corrupt index line: " + l.err.Error()}
			if l.entry != nil { // a duplicate: the line parsed
				p.Device, p.Event, p.Kind = l.entry.Device, l.entry.Event, l.entry.Kind
			}
			rep.Problems = append(rep.Problems, p)
			continue
		}
		if deleted[l.entry.key()] {
			rep.Deleted++
			continue
		}
		if reason := checkRecord(dir, reg, l.entry); reason != "" {
			e := l.entry
			rep.Problems = append(rep.Problems, Problem{Line: l.n, Device: e.Device, Event: e.Event, Kind: e.name(), Reason: reason})
			continue
		}
		rep.Verified++
	}
	return rep, nil
}

// checkRecord re-verifies one stored record; it returns why it fails, or "".
func checkRecord(dir string, reg *registry, e *indexEntry) string {
	_, _, reason := verifyStored(dir, reg, e)
	return reason
}

// verifyStored reads a stored record's envelope and media and re-verifies
// them: provenance.Verify, the signer enrolled under that very key in reg,
// and the index entry agreeing with the signed payload. It returns the bytes,
// or why the record fails ("" if it does not).
func verifyStored(dir string, reg *registry, e *indexEntry) (envelope []byte, media [][]byte, reason string) {
	env, media, _, reason := verifyStoredFull(dir, reg, e)
	return env, media, reason
}

// verifyStoredFull is verifyStored that also returns the verification.
func verifyStoredFull(dir string, reg *registry, e *indexEntry) (envelope []byte, media [][]byte, v *provenance.Verified, reason string) {
	env, err := os.ReadFile(envelopePath(dir, e))
	if err != nil {
		return nil, nil, nil, "envelope: " + err.Error()
	}
	media = make([][]byte, len(e.Media))
	for i := range e.Media {
		if media[i], err = os.ReadFile(mediaPath(dir, e, i)); err != nil {
			return nil, nil, nil, fmt.Sprintf("media %d: %v", i, err)
		}
	}
	v, err = provenance.Verify(env, media, nil)
	if err != nil {
		return nil, nil, nil, err.Error()
	}
	if reason := checkVerified(reg, e, v); reason != "" {
		return nil, nil, nil, reason
	}
	return env, media, v, ""
}

// checkVerified checks a stored record's verification result against the
// registry and its index entry; it returns why they disagree, or "".
func checkVerified(reg *registry, e *indexEntry, v *provenance.Verified) string {
	d := reg.Devices[v.Device]
	switch {
	case d == nil:
		return "signer " + v.Device + " is not enrolled"
	case !bytes.Equal(d.SPKI, v.SPKI):
		return "signing key does not match the enrolled key of " + v.Device
	}
	p := v.Payload
	switch {
	case v.Device != e.Device:
		return fmt.Sprintf("signed by device %s, index says %s", v.Device, e.Device)
	case p.Event != e.Event || p.Kind != e.Kind:
		return fmt.Sprintf("signed payload is event %s kind %s, index says event %s kind %s", p.Event, p.Kind, e.Event, e.Kind)
	case p.Seq != e.Seq:
		return fmt.Sprintf("signed seq %d, index says %d", p.Seq, e.Seq)
	case v.NextDevice != e.NextDevice:
		return fmt.Sprintf("signed rotation to device %q, index says %q", v.NextDevice, e.NextDevice)
	case p.Kind == provenance.KindSegment && (p.Segment == nil || e.Segment == nil || p.Segment.Index != *e.Segment):
		return "signed segment index does not match the index"
	case hex.EncodeToString(v.Hash[:]) != e.Envelope:
		return "envelope hash does not match the index"
	case len(p.Media) != len(e.Media):
		return fmt.Sprintf("signed payload lists %d media, index %d", len(p.Media), len(e.Media))
	}
	for i, m := range p.Media {
		im := e.Media[i]
		if hex.EncodeToString(m.SHA256) != im.SHA256 || m.Size != im.Size || m.Type != im.Type {
			return fmt.Sprintf("media %d in the index does not match the signed payload", i)
		}
	}
	return ""
}
