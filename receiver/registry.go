package receiver

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/provenance"
)

// The registry is the authoritative record of which device keys are enrolled,
// which owner each device is paired to, which devices are revoked or rotated
// to a new key, and which fleet certificate authorities are trusted. It is
// one JSON file in the data directory, replaced atomically on every change
// and read again, whole, every time a decision depends on it: when an upload
// is verified and when an owner views events or media. Nothing about it is
// cached, so a pairing change, a revocation or a CA trust change is in force
// from the next request on.

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
	Version int                      `json:"version"`
	Devices map[string]*registration `json:"devices"`
	// FleetCAs are the trusted fleet certificate authorities, by the hex
	// SHA-256 of their DER certificate (TrustCA).
	FleetCAs map[string]*fleetCA `json:"fleet_cas,omitempty"`
}

// registration is one device the registry knows: enrolled, admitted by a
// fleet CA, enrolled by a rotation, or only revoked.
type registration struct {
	// SPKI is the device's public key, DER SubjectPublicKeyInfo. It is empty
	// only for a revocation of a device never seen (Revoke of an unknown ID).
	SPKI    []byte `json:"spki,omitempty"`
	Owner   string `json:"owner,omitempty"`   // the paired owner; empty when unpaired
	Revoked bool   `json:"revoked,omitempty"` // a revoked device's uploads are refused
	// Via says how the key came in when not by Enroll: ViaFleetCA followed by
	// the CA's fingerprint (its uploads must keep carrying a certificate
	// chain that verifies to a trusted CA), or ViaRotation followed by the
	// old device ID.
	Via string `json:"via,omitempty"`
	// RotatedTo is the device ID this device's key was rotated to by its
	// rotate record of sequence RotatedSeq; uploads it signs above that
	// sequence are refused.
	RotatedTo  string `json:"rotated_to,omitempty"`
	RotatedSeq uint64 `json:"rotated_seq,omitempty"`
}

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

// owner returns the owner a device is paired to now, or "" (unknown device,
// unpaired or revoked).
func (r *registry) owner(device string) string {
	d := r.Devices[device]
	if d == nil || d.Revoked {
		return ""
	}
	return d.Owner
}

// loadRegistry reads the registry in dir. A missing file is an empty registry.
// Writers replace the file by rename, so a read needs no lock.
func loadRegistry(dir string) (*registry, error) {
	b, err := os.ReadFile(filepath.Join(dir, registryFile))
	if errors.Is(err, os.ErrNotExist) {
		return &registry{Version: 1, Devices: map[string]*registration{}, FleetCAs: map[string]*fleetCA{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: read registry: %w", err)
	}
	var r registry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("receiver: registry %s: %w", filepath.Join(dir, registryFile), err)
	}
	if r.Version != 1 {
		return nil, fmt.Errorf("receiver: registry %s: version %d, want 1", filepath.Join(dir, registryFile), r.Version)
	}
	if r.Devices == nil {
		r.Devices = map[string]*registration{}
	}
	for id, d := range r.Devices {
		switch {
		case d == nil:
			return nil, fmt.Errorf("receiver: registry %s: device %s has no record", filepath.Join(dir, registryFile), id)
		case len(d.SPKI) == 0 && !d.Revoked:
			return nil, fmt.Errorf("receiver: registry %s: device %s has no key", filepath.Join(dir, registryFile), id)
		}
	}
	if r.FleetCAs == nil {
		r.FleetCAs = map[string]*fleetCA{}
	}
	for fp, ca := range r.FleetCAs {
		if ca == nil || fingerprint(ca.Cert) != fp {
			return nil, fmt.Errorf("receiver: registry %s: fleet CA %s: certificate does not match its fingerprint", filepath.Join(dir, registryFile), fp)
		}
		if _, err := x509.ParseCertificate(ca.Cert); err != nil {
			return nil, fmt.Errorf("receiver: registry %s: fleet CA %s: %w", filepath.Join(dir, registryFile), fp, err)
		}
	}
	return &r, nil
}

// updateRegistry runs fn on the current registry under the registry lock and
// writes the result atomically if fn succeeds.
func updateRegistry(dir string, fn func(*registry) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("receiver: data directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, registryLock), true)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := loadRegistry(dir)
	if err != nil {
		return err
	}
	if err := fn(r); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: encode registry: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, registryFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: write registry: %w", err)
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
	if _, err := provenance.Algorithm(pub); err != nil {
		return "", fmt.Errorf("receiver: enroll: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("receiver: enroll: %w", err)
	}
	id, err := provenance.DeviceID(pub)
	if err != nil {
		return "", fmt.Errorf("receiver: enroll: %w", err)
	}
	err = updateRegistry(dir, func(r *registry) error {
		if d := r.Devices[id]; d != nil {
			if d.Revoked {
				return fmt.Errorf("receiver: enroll %s: %w", id, ErrRevoked)
			}
			if !bytes.Equal(d.SPKI, spki) {
				return fmt.Errorf("receiver: enroll %s: the registry holds a different key for this ID", id)
			}
			if d.byFleetCA() {
				d.Via = ""
			}
			return nil
		}
		r.Devices[id] = &registration{SPKI: spki}
		return nil
	})
	if err != nil {
		return "", err
	}
	return id, nil
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

// Pair makes owner the one owner who may view deviceID's events, replacing
// any previous pairing. The device must be enrolled and not revoked.
func Pair(dir, deviceID, owner string) error {
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
		d.Owner = owner
		return nil
	})
}

// Unpair removes deviceID's pairing: no owner may view its events until it is
// paired again. Its uploads are still accepted.
func Unpair(dir, deviceID string) error {
	return updateRegistry(dir, func(r *registry) error {
		d := r.Devices[deviceID]
		if d == nil {
			return fmt.Errorf("receiver: unpair %s: %w", deviceID, ErrNotEnrolled)
		}
		d.Owner = ""
		return nil
	})
}

// Revoke marks deviceID's enrolment revoked and removes its pairing: its
// uploads are refused from then on, whatever certificate they carry, no owner
// sees its events, its key can not be enrolled again, and it can not rotate
// to a new key. Stored events stay (CheckStore still verifies them). A
// well-formed device ID the registry does not know yet is recorded as revoked,
// so a device a fleet CA certified can be refused before it ever uploads.
// Revoking a device does not revoke a key it already rotated to: revoke that
// one too.
func Revoke(dir, deviceID string) error {
	return updateRegistry(dir, func(r *registry) error {
		d := r.Devices[deviceID]
		if d == nil {
			if !ValidDeviceID(deviceID) {
				return fmt.Errorf("receiver: revoke %q: not a device ID (26 characters of a-z and 2-7)", deviceID)
			}
			d = &registration{}
			r.Devices[deviceID] = d
		}
		d.Revoked = true
		d.Owner = ""
		return nil
	})
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
