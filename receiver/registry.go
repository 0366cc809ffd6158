package receiver

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/keyframe-cam/keyframe/provenance"
)

// The registry is the authoritative record of which device keys are enrolled,
// which owner each device is paired to over which of its sequence numbers,
// which devices are revoked or rotated to a new key, and which fleet
// certificate authorities are trusted. It is kept in the data directory as a
// snapshot, registry.json, and a journal of the changes since,
// registry.journal (regjournal.go), both written under a flock on
// registry.lock, and it is read again every time a decision depends on it:
// when an upload is verified and when an owner views events or media. A
// pairing change, a revocation or a CA trust change is therefore in force
// from the next request on, whichever process made it.
//
// Ownership over time. A pairing covers an interval of the device's signed
// sequence numbers, not of any clock: a record (device, seq) belongs to the
// owner whose pairing covered seq, forever. Pairing a device to another
// owner (a transfer) closes the previous owner's interval where the new one
// begins; unpairing closes it and opens none, so records signed after it are
// visible to no one; a new interval never begins below the end of an earlier
// one, so no history moves. Registration entries are never deleted: the
// registry is also the record of every key ever enrolled (a rotation to any
// of them is refused).

const (
	registryFile = "registry.json"
	registryLock = "registry.lock"
)

// Registry errors, returned wrapped.
var (
	// ErrNotEnrolled reports a device ID that has no enrolled key.
	ErrNotEnrolled = errors.New("device not enrolled")
	// ErrRevoked reports a device whose enrolment was revoked.
	ErrRevoked = errors.New("device revoked")
	// ErrOwner reports an owner name that is not 1-64 characters of [a-z0-9_-].
	ErrOwner = errors.New("invalid owner name (want 1-64 characters of a-z, 0-9, '_' and '-')")
)

// registry is the on-disk form of the enrolment and pairing records.
type registry struct {
	// Generation is bumped by every change. It must stay the first field:
	// readers find it in the snapshot's first bytes (registryReader).
	Generation uint64                   `json:"generation"`
	Version    int                      `json:"version"`
	Devices    map[string]*registration `json:"devices"`
	// FleetCAs are the trusted fleet certificate authorities, by the hex
	// SHA-256 of their DER certificate (TrustCA).
	FleetCAs map[string]*fleetCA `json:"fleet_cas,omitempty"`

	// The changes of an update, for its journal line (see edit). A registry
	// returned by a reader has none and is shared: never changed.
	shared    bool            // Devices is a reader's: copy it before changing it
	sharedCAs bool            // FleetCAs is a reader's
	dirty     map[string]bool // devices changed by this update (their registrations are its own)
	dirtyCAs  map[string]bool // fleet CAs added or removed by this update
}

// registration is one device the registry knows: enrolled, admitted by a
// fleet CA, enrolled by a rotation, or only revoked.
type registration struct {
	// SPKI is the device's public key, DER SubjectPublicKeyInfo. It is empty
	// only for a revocation of a device never seen (Revoke of an unknown ID).
	SPKI []byte `json:"spki,omitempty"`
	// Owner is the pairing of a registry written before pairings had
	// intervals. It is only read: parseRegistry turns it into one open
	// pairing from sequence number 0 (the owner of then keeps every record
	// stored), and it is never written again.
	Owner string `json:"owner,omitempty"`
	// Pairings are the device's owners over its sequence numbers, in
	// order, not overlapping; only the last may be open.
	Pairings []pairing `json:"pairings,omitempty"`
	Revoked  bool      `json:"revoked,omitempty"` // a revoked device's uploads are refused, and no one sees its events
	// Via says how the key came in when not by Enroll: ViaFleetCA followed by
	// the CA's fingerprint (its uploads must keep carrying a certificate
	// chain that verifies to a trusted CA), or ViaRotation followed by the
	// old device ID.
	Via string `json:"via,omitempty"`
	// RotatedTo is the device ID this device's key was rotated to by its
	// rotate record of sequence RotatedSeq, accepted at RotatedAtMs (the
	// receiver's clock, Unix milliseconds; for the rotation rate limit);
	// uploads it signs above that sequence are refused.
	RotatedTo   string `json:"rotated_to,omitempty"`
	RotatedSeq  uint64 `json:"rotated_seq,omitempty"`
	RotatedAtMs int64  `json:"rotated_at_ms,omitempty"`
}

// pairing is one owner's interval of a device's sequence numbers:
// [From, Until), open (to every later record) when Until is 0.
type pairing struct {
	Owner string `json:"owner"`
	From  uint64 `json:"from_seq"`
	Until uint64 `json:"until_seq,omitempty"`
}

// covers reports whether the pairing covers sequence number seq.
func (p pairing) covers(seq uint64) bool { return seq >= p.From && (p.Until == 0 || seq < p.Until) }

// How a key came to be in the registry (registration.Via prefixes).
const (
	ViaFleetCA  = "fleet-ca:"
	ViaRotation = "rotation:"
)

// fleetCA is one trusted fleet certificate authority.
type fleetCA struct {
	Cert    []byte `json:"cert"`    // DER
	Subject string `json:"subject"` // for people reading the file
}

// byFleetCA reports whether a device was admitted by a fleet CA certificate
// rather than enrolled.
func (d *registration) byFleetCA() bool { return strings.HasPrefix(d.Via, ViaFleetCA) }

// clone returns a copy of d that can be changed without changing d.
func (d *registration) clone() *registration {
	c := *d
	c.Pairings = slices.Clone(d.Pairings)
	return &c
}

// open returns the device's open pairing, or nil.
func (d *registration) open() *pairing {
	if n := len(d.Pairings); n > 0 && d.Pairings[n-1].Until == 0 {
		return &d.Pairings[n-1]
	}
	return nil
}

// ownerAt returns the owner whose pairing covers seq, or "".
func (d *registration) ownerAt(seq uint64) string {
	for _, p := range d.Pairings {
		if p.covers(seq) {
			return p.Owner
		}
	}
	return ""
}

// boundary is the lowest sequence number a new pairing may begin at: the
// end of the last pairing (the beginning of an open one).
func (d *registration) boundary() uint64 {
	n := len(d.Pairings)
	if n == 0 {
		return 0
	}
	if p := d.Pairings[n-1]; p.Until != 0 {
		return p.Until
	}
	return d.Pairings[n-1].From
}

// pairFrom makes owner the owner of the device's records from sequence
// number from on (raised to boundary if below it), closing the open pairing
// of another owner there. Pairing to the owner of the open pairing changes
// nothing.
func (d *registration) pairFrom(owner string, from uint64) {
	from = max(from, d.boundary())
	if o := d.open(); o != nil && o.Owner == owner {
		return
	}
	d.closeAt(from)
	d.Pairings = append(d.Pairings, pairing{Owner: owner, From: from})
}

// closeAt ends the open pairing before sequence number at (never below its
// beginning); a pairing left empty is dropped.
func (d *registration) closeAt(at uint64) {
	o := d.open()
	if o == nil {
		return
	}
	if at <= o.From {
		d.Pairings = d.Pairings[:len(d.Pairings)-1]
		return
	}
	o.Until = at
}

// hadOwner reports whether a closed pairing of the device is owner's.
func (d *registration) hadOwner(owner string) bool {
	for _, p := range d.Pairings {
		if p.Owner == owner && p.Until != 0 {
			return true
		}
	}
	return false
}

// owner returns the owner a device is paired to now (its open pairing), or
// "" (unknown device, unpaired or revoked).
func (r *registry) owner(device string) string {
	d := r.Devices[device]
	if d == nil || d.Revoked {
		return ""
	}
	if o := d.open(); o != nil {
		return o.Owner
	}
	return ""
}

// ownerAt returns the owner of device's record of sequence number seq: the
// owner whose pairing covers seq, or "" (unknown device, no pairing covers
// it, or revoked).
func (r *registry) ownerAt(device string, seq uint64) string {
	d := r.Devices[device]
	if d == nil || d.Revoked {
		return ""
	}
	return d.ownerAt(seq)
}

// hadOwner reports whether device was paired to owner before, by a pairing
// that has ended (and is not revoked).
func (r *registry) hadOwner(device, owner string) bool {
	d := r.Devices[device]
	return d != nil && !d.Revoked && d.hadOwner(owner)
}

// edit returns device's registration for changing in this update (nil if
// the registry has none), copying it first if it is shared with a reader,
// and marks it for the update's journal line.
func (r *registry) edit(device string) *registration {
	d := r.Devices[device]
	if d == nil {
		return nil
	}
	if !r.dirty[device] {
		d = d.clone()
		r.put(device, d)
	}
	return d
}

// put adds or replaces device's registration in this update.
func (r *registry) put(device string, d *registration) {
	if r.shared {
		r.Devices = maps.Clone(r.Devices)
		r.shared = false
	}
	r.Devices[device] = d
	if r.dirty == nil {
		r.dirty = map[string]bool{}
	}
	r.dirty[device] = true
}

// putCA adds (ca != nil) or removes (nil) a fleet CA in this update.
func (r *registry) putCA(fp string, ca *fleetCA) {
	if r.sharedCAs {
		r.FleetCAs = maps.Clone(r.FleetCAs)
		r.sharedCAs = false
	}
	if ca == nil {
		delete(r.FleetCAs, fp)
	} else {
		r.FleetCAs[fp] = ca
	}
	if r.dirtyCAs == nil {
		r.dirtyCAs = map[string]bool{}
	}
	r.dirtyCAs[fp] = true
}

// emptyRegistry is the registry of a directory without registry.json.
func emptyRegistry() *registry {
	return &registry{Version: 1, Devices: map[string]*registration{}, FleetCAs: map[string]*fleetCA{}}
}

// loadRegistry reads and parses the registry in dir (snapshot and journal).
// A missing snapshot is an empty registry. The result is the caller's own
// copy.
func loadRegistry(dir string) (*registry, error) {
	reg, err := newRegistryReader(dir).read()
	if err != nil {
		return nil, err
	}
	return reg.forUpdate(), nil
}

// parseRegistry decodes and checks the registry snapshot at path, whose
// content is b.
func parseRegistry(path string, b []byte) (*registry, error) {
	var r registry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("receiver: registry %s: %w", path, err)
	}
	if r.Version != 1 {
		return nil, fmt.Errorf("receiver: registry %s: version %d, want 1", path, r.Version)
	}
	if r.Devices == nil {
		r.Devices = map[string]*registration{}
	}
	for id, d := range r.Devices {
		if err := checkRegistration(id, d); err != nil {
			return nil, fmt.Errorf("receiver: registry %s: %w", path, err)
		}
	}
	if r.FleetCAs == nil {
		r.FleetCAs = map[string]*fleetCA{}
	}
	for fp, ca := range r.FleetCAs {
		if err := checkFleetCA(fp, ca); err != nil {
			return nil, fmt.Errorf("receiver: registry %s: %w", path, err)
		}
	}
	return &r, nil
}

// checkRegistration checks one device's record as read from disk, and turns
// a pairing of the old form (Owner) into an open pairing from sequence
// number 0.
func checkRegistration(id string, d *registration) error {
	switch {
	case d == nil:
		return fmt.Errorf("device %s has no record", id)
	case len(d.SPKI) == 0 && !d.Revoked:
		return fmt.Errorf("device %s has no key", id)
	}
	if d.Owner != "" {
		if len(d.Pairings) > 0 {
			return fmt.Errorf("device %s has both an owner and pairings", id)
		}
		d.Pairings = []pairing{{Owner: d.Owner}}
		d.Owner = ""
	}
	var end uint64
	for i, p := range d.Pairings {
		switch {
		case !ValidOwner(p.Owner):
			return fmt.Errorf("device %s pairing %d: owner %q: %w", id, i, clip(p.Owner), ErrOwner)
		case i > 0 && p.From < end:
			return fmt.Errorf("device %s pairing %d begins at %d, before the end of the one before (%d)", id, i, p.From, end)
		case p.Until == 0 && i != len(d.Pairings)-1:
			return fmt.Errorf("device %s pairing %d is open but not the last", id, i)
		case p.Until != 0 && p.Until <= p.From:
			return fmt.Errorf("device %s pairing %d is empty (from %d until %d)", id, i, p.From, p.Until)
		}
		end = p.Until
	}
	return nil
}

// checkFleetCA checks one fleet CA entry as read from disk.
func checkFleetCA(fp string, ca *fleetCA) error {
	if ca == nil || fingerprint(ca.Cert) != fp {
		return fmt.Errorf("fleet CA %s: certificate does not match its fingerprint", fp)
	}
	if _, err := x509.ParseCertificate(ca.Cert); err != nil {
		return fmt.Errorf("fleet CA %s: %w", fp, err)
	}
	return nil
}

// Enroll registers the public key in pubPEM (a PEM "PUBLIC KEY" block, as
// keyframe identity -pubout writes it) in the registry in dir, creating dir if
// needed, and returns the device ID, which is the key's fingerprint
// (provenance.DeviceID). Enrolling a key again is a no-op that keeps its
// pairing; a revoked key cannot be enrolled again. Enrolling a key that came
// in by a fleet CA certificate makes it individually enrolled: its uploads no
// longer need a certificate.
func Enroll(dir string, pubPEM []byte) (deviceID string, err error) {
	blk, _ := pem.Decode(pubPEM)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return "", errors.New("receiver: enroll: no PEM \"PUBLIC KEY\" block")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("receiver: enroll: %w", err)
	}
	ids, err := EnrollAll(dir, []Enrollment{{PublicKey: pub}})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// Enrollment is one device for EnrollAll: its public key (ECDSA P-256 or
// Ed25519) and, if Owner is not empty, the owner to pair it to.
type Enrollment struct {
	PublicKey crypto.PublicKey
	Owner     string
}

// EnrollAll enrolls many devices, and pairs those with an Owner, in one
// registry write: what a fleet's provisioning (or a test of thousands of
// devices) needs, where one Enroll and one Pair per device would rewrite the
// whole registry twice per device. Each key is enrolled as by Enroll, each
// pairing made as by Pair; if any fails nothing is written. It returns the
// device IDs in the order of es.
func EnrollAll(dir string, es []Enrollment) ([]string, error) {
	type key struct {
		id   string
		spki []byte
	}
	keys := make([]key, len(es))
	for i, e := range es {
		if _, err := provenance.Algorithm(e.PublicKey); err != nil {
			return nil, fmt.Errorf("receiver: enroll: %w", err)
		}
		if e.Owner != "" && !ValidOwner(e.Owner) {
			return nil, fmt.Errorf("receiver: pair: %q: %w", e.Owner, ErrOwner)
		}
		spki, err := x509.MarshalPKIXPublicKey(e.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("receiver: enroll: %w", err)
		}
		id, err := provenance.DeviceID(e.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("receiver: enroll: %w", err)
		}
		keys[i] = key{id, spki}
	}
	var paired []string
	for i, k := range keys {
		if es[i].Owner != "" {
			paired = append(paired, k.id)
		}
	}
	err := updateRegistry(dir, func(r *registry) error {
		next, err := storedNext(dir, paired)
		if err != nil {
			return err
		}
		for i, k := range keys {
			if err := enrollKey(r, k.id, k.spki); err != nil {
				return err
			}
			if es[i].Owner != "" {
				r.edit(k.id).pairFrom(es[i].Owner, next[k.id])
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.id
	}
	return ids, nil
}

// enrollKey enrolls one key in r (see Enroll).
func enrollKey(r *registry, id string, spki []byte) error {
	if d := r.Devices[id]; d != nil {
		if d.Revoked {
			return fmt.Errorf("receiver: enroll %s: %w", id, ErrRevoked)
		}
		if !bytes.Equal(d.SPKI, spki) {
			return fmt.Errorf("receiver: enroll %s: the registry holds a different key for this ID", id)
		}
		if d.byFleetCA() {
			r.edit(id).Via = ""
		}
		return nil
	}
	r.put(id, &registration{SPKI: spki})
	return nil
}

// ValidOwner reports whether s is a well-formed owner name: 1 to 64
// characters of a-z, 0-9, '_' and '-'.
func ValidOwner(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Pair makes owner the owner of deviceID's records from the device's next
// sequence number as far as this receiver knows (one above the highest it
// has stored for the device, read from the index) on: the PairFrom of a
// caller that does not know the device's own count. A previous owner keeps
// the records before it. Records the device signed before the pairing but
// uploads after it (still in its spool) go to the new owner: a caller that
// knows the device's signed current sequence number uses PairFrom.
func Pair(dir, deviceID, owner string) error {
	return PairFrom(dir, deviceID, owner, 0)
}

// PairFrom makes owner the owner of deviceID's records of sequence number
// fromSeq and above: the device's signed current sequence number when the
// caller knows it (a claim's proof of possession). The pairing never begins
// below a record the receiver has already stored for the device nor below
// the end of an earlier pairing, so no stored record changes owner: an
// earlier owner keeps what their pairing covered, records stored while the
// device was unpaired stay visible to no one. A device paired to another
// owner is transferred: that pairing ends where this one begins. Pairing
// to the owner of the open pairing changes nothing. The device must be
// enrolled and not revoked.
func PairFrom(dir, deviceID, owner string, fromSeq uint64) error {
	if !ValidOwner(owner) {
		return fmt.Errorf("receiver: pair: %q: %w", owner, ErrOwner)
	}
	return updateRegistry(dir, func(r *registry) error {
		d := r.Devices[deviceID]
		switch {
		case d == nil:
			return fmt.Errorf("receiver: pair %s: %w", deviceID, ErrNotEnrolled)
		case d.Revoked:
			return fmt.Errorf("receiver: pair %s: %w", deviceID, ErrRevoked)
		}
		if o := d.open(); o != nil && o.Owner == owner {
			return nil
		}
		next, err := storedNext(dir, []string{deviceID})
		if err != nil {
			return err
		}
		r.edit(deviceID).pairFrom(owner, max(fromSeq, next[deviceID]))
		return nil
	})
}

// Unpair ends deviceID's pairing at the device's next sequence number as far
// as this receiver knows (as Pair): the owner keeps the records stored
// before, and the records after are visible to no one, even if the device is
// paired again later. Its uploads are still accepted, verified and stored.
func Unpair(dir, deviceID string) error {
	return updateRegistry(dir, func(r *registry) error {
		d := r.Devices[deviceID]
		if d == nil {
			return fmt.Errorf("receiver: unpair %s: %w", deviceID, ErrNotEnrolled)
		}
		if d.open() == nil {
			return nil
		}
		next, err := storedNext(dir, []string{deviceID})
		if err != nil {
			return err
		}
		r.edit(deviceID).closeAt(next[deviceID])
		return nil
	})
}

// Revoke marks deviceID's enrolment revoked: its uploads are refused from
// then on, whatever certificate they carry, no owner sees its events (its
// pairings stay in the registry as history), its key can not be enrolled
// again, and it can not rotate to a new key. Stored events stay (CheckStore
// still verifies them). A well-formed device ID the registry does not know
// yet is recorded as revoked, so a device a fleet CA certified can be
// refused before it ever uploads. Revoking a device does not revoke a key
// it already rotated to: revoke that one too.
func Revoke(dir, deviceID string) error {
	return updateRegistry(dir, func(r *registry) error {
		if r.Devices[deviceID] == nil {
			if !ValidDeviceID(deviceID) {
				return fmt.Errorf("receiver: revoke %q: not a device ID (26 characters of a-z and 2-7)", deviceID)
			}
			r.put(deviceID, &registration{Revoked: true})
			return nil
		}
		if d := r.Devices[deviceID]; !d.Revoked {
			r.edit(deviceID).Revoked = true
		}
		return nil
	})
}

// storedNext reads the index in dir and returns, for each of devices, one
// above the highest sequence number stored for it (0 if none): where a
// pairing made now begins. A torn last line (an append interrupted by a
// crash, never acknowledged) is ignored; any other line that does not
// decode is an error, since a boundary set too low would hand stored
// records to a new owner.
func storedNext(dir string, devices []string) (map[string]uint64, error) {
	next := make(map[string]uint64, len(devices))
	if len(devices) == 0 {
		return next, nil
	}
	want := make(map[string]bool, len(devices))
	for _, d := range devices {
		want[d] = true
	}
	f, err := os.Open(filepath.Join(dir, indexFile))
	if errors.Is(err, os.ErrNotExist) {
		return next, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: read index: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	prefix := []byte(`{"device":"`)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: read the rest of it.
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if errors.Is(err, io.EOF) {
			return next, nil // a torn last line, or none
		}
		if err != nil {
			return nil, fmt.Errorf("receiver: read index: %w", err)
		}
		// Index lines are written by json.Marshal of an indexEntry, whose
		// first field is the device: skip other devices' lines undecoded.
		rest, ok := bytes.CutPrefix(line, prefix)
		if ok {
			if i := bytes.IndexByte(rest, '"'); i >= 0 && !want[string(rest[:i])] {
				continue
			}
		}
		var e struct {
			Device string `json:"device"`
			Seq    uint64 `json:"seq"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("receiver: index line %d is corrupt: %w", n, err)
		}
		if want[e.Device] && e.Seq+1 > next[e.Device] {
			next[e.Device] = e.Seq + 1
		}
	}
}

// ValidDeviceID reports whether s has the form of a device ID
// (provenance.DeviceID): 26 characters of a-z and 2-7.
func ValidDeviceID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
