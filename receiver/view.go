package receiver

import (
	"fmt"
	"slices"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// The owner view. What an owner is offered is chosen by the OwnerLookup
// (by default the registry); what is served is decided by the registry read
// for this very request: an event is served to owner O only if the registry
// pairs O with the event's verified signer (the device of its index entry,
// which Verify established on arrival). Media and envelopes are also
// re-verified from disk (provenance.Verify) before they leave (serveMedia,
// handleOwnerEnvelope). A row, an image or an envelope the lookup offered to
// the wrong owner is withheld and counted as a caught mix-up.

// EventView is one stored record as an owner's view shows it.
type EventView struct {
	Device     string // the verified signer
	Event      string
	Kind       string // provenance.KindStart, KindEnd or KindRotate
	Seq        uint64
	Owner      string    // the owner the registry pairs with Device, read for this view
	Captured   time.Time // capture time from the signed payload (UTC)
	Clock      string    // provenance.ClockSynced or ClockUnsynced
	Received   time.Time // when the receiver stored it
	KeyStore   string
	Duration   time.Duration
	Envelope   string      // hex SHA-256 of the envelope
	Media      []MediaView // in payload order
	NextDevice string      // a rotate record: the new key's device
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

// ownerOf asks the OwnerLookup (or, without one, reg) whose device is.
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
// registry read that decided it.
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
	var offered []string
	for _, d := range devices {
		claimed, err := s.ownerOf(reg, d)
		if err != nil {
			return nil, nil, err
		}
		if claimed == owner {
			offered = append(offered, d)
		}
	}
	var pos []int
	s.mu.Lock()
	for _, d := range offered {
		ps := s.byDevice[d]
		if paired := reg.owner(d); paired != owner {
			s.mixupLocked(d, owner, paired, len(ps))
			continue
		}
		pos = append(pos, ps...)
	}
	slices.Sort(pos)
	out := make([]*indexEntry, len(pos))
	for i, p := range pos {
		out[len(out)-1-i] = s.records[p]
	}
	s.mu.Unlock()
	return out, reg, nil
}

// mayServe decides whether a record of device may be served to owner: the
// lookup must offer it and the registry read for this request must pair the
// device with owner. It counts a denied view (the lookup does not offer it)
// or a caught mix-up (the lookup offers it, the registry disagrees).
func (s *Server) mayServe(reg *registry, device, owner string) (bool, error) {
	claimed, err := s.ownerOf(reg, device)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if claimed != owner {
		s.stats.DeniedViews++
		return false, nil
	}
	if paired := reg.owner(device); paired != owner {
		s.mixupLocked(device, owner, paired, 1)
		return false, nil
	}
	return true, nil
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
