package receiver

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// The owner view. What an owner is offered is chosen by the OwnerLookup
// (by default the registry), which names a device's owner now, and by the
// registry's ended pairings of the device to the owner (a lookup knows no
// history); what is served is decided by the registry read for this very
// request: an event (device, seq) is served to owner O only if a pairing of
// O covers seq on the event's verified signer (the device of its index
// entry, which Verify established on arrival). Ownership follows the
// device's signed sequence numbers, not the pairing of the moment: after a
// transfer the previous owner still sees what was recorded under their
// pairing, the new owner only what came after. Media and envelopes are also
// re-verified from disk (provenance.Verify) before they leave (serveMedia,
// handleOwnerEnvelope). Events the lookup offered to an owner the registry
// does not pair with the device now are withheld and counted as caught
// mix-ups.

// EventView is one stored record as an owner's view shows it.
type EventView struct {
	Device     string // the verified signer
	Event      string
	Kind       string // provenance.KindStart, KindEnd or KindRotate
	Seq        uint64
	Owner      string    // the owner whose pairing covers Seq, read for this view
	Captured   time.Time // capture time from the signed payload (UTC)
	Clock      string    // provenance.ClockSynced or ClockUnsynced
	Received   time.Time // when the receiver stored it
	KeyStore   string
	Duration   time.Duration
	Envelope   string      // hex SHA-256 of the envelope
	Media      []MediaView // in payload order
	NextDevice string      // a rotate record: the new key's device
	// Source is where the frames came from, as the signed payload says
	// ("camera HD Pro Webcam C920 usb-...", "synthetic scene", "source not
	// stated"); FromCamera is false for anything that is not a camera.
	Source     string
	FromCamera bool
}

// MediaView describes one media object of an EventView.
type MediaView struct {
	Role   string
	Type   string
	Size   uint64
	SHA256 string // hex
}

// Thumbnail returns the index of the record's thumbnail (or first image) in
// Media, or -1 if it has none.
func (v EventView) Thumbnail() int {
	first := -1
	for i, m := range v.Media {
		if !servableImage(m.Type) {
			continue
		}
		if m.Role == provenance.RoleThumbnail {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	return first
}

func newEventView(e *indexEntry, owner string) EventView {
	v := EventView{
		Device:     e.Device,
		Event:      e.Event,
		Kind:       e.Kind,
		Seq:        e.Seq,
		Owner:      owner,
		Captured:   time.UnixMilli(e.TimeUnixMs).UTC(),
		Clock:      e.Clock,
		Received:   e.ReceivedAt,
		KeyStore:   e.KeyStore,
		Duration:   time.Duration(e.DurationMs) * time.Millisecond,
		Envelope:   e.Envelope,
		Media:      make([]MediaView, len(e.Media)),
		NextDevice: e.NextDevice,
		Source:     e.sourceText(),
		FromCamera: e.fromCamera(),
	}
	for i, m := range e.Media {
		v.Media[i] = MediaView(m)
	}
	return v
}

// OwnerEvents returns the stored records owner may see now, newest first:
// those of the devices the OwnerLookup attributes to owner, each re-checked
// against the registry read for this call (see OwnerLookup). The owner page
// shows the same list. It fails with ErrOwner for a malformed owner name, or
// when the registry or the lookup cannot be read.
func (s *Server) OwnerEvents(owner string) ([]EventView, error) {
	entries, _, err := s.ownerEntries(owner)
	if err != nil {
		return nil, err
	}
	out := make([]EventView, len(entries))
	for i, e := range entries {
		out[i] = newEventView(e, owner)
	}
	return out, nil
}

// PairedOwner returns the owner the registry pairs deviceID with now ("" if
// the device is unknown, unpaired or revoked). It reads the registry on disk
// (cheaply: see registryReader), so a pairing made by another process is
// seen at once.
func (s *Server) PairedOwner(deviceID string) (string, error) {
	reg, err := s.regs.read()
	if err != nil {
		return "", err
	}
	return reg.owner(deviceID), nil
}

// RegistryReads returns how many times the Server has read and parsed the
// whole registry file since Open (the other requests found it unchanged).
func (s *Server) RegistryReads() uint64 {
	s.regs.mu.Lock()
	defer s.regs.mu.Unlock()
	return s.regs.parses
}

// ownerOf asks the OwnerLookup (or, without one, reg) whose device is now.
func (s *Server) ownerOf(reg *registry, device string) (string, error) {
	if s.owners == nil {
		return reg.owner(device), nil
	}
	o, err := s.owners.OwnerOf(device)
	if err != nil {
		return "", fmt.Errorf("receiver: owner lookup for device %s: %w", device, err)
	}
	return o, nil
}

// ownerEntries returns the records owner may see now, newest first, and the
// registry read that decided it: of the devices the lookup attributes to
// owner, or that the registry paired to owner by a pairing that has ended,
// the records a pairing
// of owner covers. Records of a device the lookup offered although the
// registry does not pair it with owner now, and not covered by an earlier
// pairing of owner, are caught mix-ups.
func (s *Server) ownerEntries(owner string) ([]*indexEntry, *registry, error) {
	if !ValidOwner(owner) {
		return nil, nil, fmt.Errorf("receiver: owner %q: %w", clip(owner), ErrOwner)
	}
	reg, err := s.regs.read()
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	devices := s.devices // append-only: this prefix never changes
	s.mu.Unlock()
	type offer struct {
		device string
		lookup bool // offered by the lookup (not only by an earlier pairing)
	}
	var offered []offer
	for _, d := range devices {
		claimed, err := s.ownerOf(reg, d)
		if err != nil {
			return nil, nil, err
		}
		if claimed == owner || reg.hadOwner(d, owner) {
			offered = append(offered, offer{d, claimed == owner})
		}
	}
	var pos []int
	s.mu.Lock()
	for _, o := range offered {
		current := reg.owner(o.device)
		withheld := 0
		for _, p := range s.byDevice[o.device] {
			if s.records[p].deleted {
				continue
			}
			if reg.ownerAt(o.device, s.records[p].Seq) == owner {
				pos = append(pos, p)
			} else if o.lookup && current != owner {
				withheld++
			}
		}
		s.mixupLocked(o.device, owner, current, withheld)
	}
	slices.Sort(pos)
	out := make([]*indexEntry, len(pos))
	for i, p := range pos {
		out[len(out)-1-i] = s.records[p]
	}
	s.mu.Unlock()
	return out, reg, nil
}

// mayServe decides whether the device's records of now on (its open
// pairing) may be served to owner: mayServeSeq for a sequence number above
// every closed pairing. A caller serving a stored record uses mayServeEntry.
func (s *Server) mayServe(reg *registry, device, owner string) (bool, error) {
	return s.mayServeSeq(reg, device, math.MaxUint64, owner)
}

// mayServeEntry decides whether a stored record may be served to owner
// (mayServeSeq of its verified signer and sequence number).
func (s *Server) mayServeEntry(reg *registry, e *indexEntry, owner string) (bool, error) {
	return s.mayServeSeq(reg, e.Device, e.Seq, owner)
}

// mayServeSeq decides whether the record of sequence number seq of device
// may be served to owner: the lookup must offer the device to owner (or an
// ended pairing of the registry must be owner's), and the registry read for
// this request must have a pairing of owner covering seq on the device. It
// counts a denied view, or a caught mix-up (the lookup offers the device,
// the registry pairs it with someone else now, and no pairing of owner
// covers seq).
func (s *Server) mayServeSeq(reg *registry, device string, seq uint64, owner string) (bool, error) {
	claimed, err := s.ownerOf(reg, device)
	if err != nil {
		return false, err
	}
	covered := reg.ownerAt(device, seq) == owner
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case covered && (claimed == owner || reg.hadOwner(device, owner)):
		return true, nil
	case claimed == owner && reg.owner(device) != owner:
		s.mixupLocked(device, owner, reg.owner(device), 1)
	default:
		s.stats.DeniedViews++
	}
	return false, nil
}

// mixupLocked counts n withheld events of device that the lookup offered to
// owner although the registry pairs it with paired, and logs the first
// mix-up of each (device, owner). Callers hold mu.
func (s *Server) mixupLocked(device, owner, paired string, n int) {
	if n <= 0 {
		return
	}
	s.stats.MixupsCaught += uint64(n)
	k := [2]string{device, owner}
	if _, done := s.mixLogged[k]; done {
		return
	}
	if len(s.mixLogged) >= maxMixLogged {
		if len(s.mixLogged) == maxMixLogged {
			s.mixLogged[[2]string{}] = struct{}{} // log this once
			s.log.Warn("receiver: owner lookup mix-ups: too many to log each; counting only (stats mixups_caught)")
		}
		return
	}
	s.mixLogged[k] = struct{}{}
	if paired == "" {
		paired = "(none)"
	}
	s.log.Warn("receiver: owner lookup mix-up caught: events withheld", "device", device,
		"offered_to", owner, "paired_owner", paired, "withheld", n)
}
