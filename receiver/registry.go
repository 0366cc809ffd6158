package receiver

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/provenance"
)

// The registry is the authoritative record of which device keys are enrolled,
// which owner each device is paired to, which devices are revoked or rotated
// to a new key, and which fleet certificate authorities are trusted. It is
// one JSON file in the data directory, replaced atomically on every change
// (under a flock on registry.lock) and read again every time a decision
// depends on it: when an upload is verified and when an owner views events or
// media. A pairing change, a revocation or a CA trust change is therefore in
// force from the next request on, whichever process made it.
//
// Reading is cheap without being a cache that can go stale: every write
// bumps a generation number, the file's first field, and a Server keeps the
// parsed copy of its last full read only to compare: each request opens the
// file, reads its first bytes, and reuses the parsed copy only if the open
// file has the same generation and is the same file (device, inode, size,
// modification time) as the one parsed. Otherwise it reads and parses the
// whole file again. A request costs an open, a stat and a 64-byte read, not
// a parse of megabytes (10,000 devices make a file of about 2 MB).

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
	// Generation is bumped by every write. It must stay the first field:
	// readers find it in the file's first bytes (registryReader).
	Generation uint64                   `json:"generation"`
	Version    int                      `json:"version"`
	Devices    map[string]*registration `json:"devices"`
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

// emptyRegistry is the registry of a directory without registry.json.
func emptyRegistry() *registry {
	return &registry{Version: 1, Devices: map[string]*registration{}, FleetCAs: map[string]*fleetCA{}}
}

// loadRegistry reads and parses the registry in dir. A missing file is an
// empty registry. Writers replace the file by rename, so a read needs no lock.
// The result is the caller's own copy.
func loadRegistry(dir string) (*registry, error) {
	b, err := os.ReadFile(filepath.Join(dir, registryFile))
	if errors.Is(err, os.ErrNotExist) {
		return emptyRegistry(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: read registry: %w", err)
	}
	return parseRegistry(filepath.Join(dir, registryFile), b)
}

// parseRegistry decodes and checks the registry file at path, whose content
// is b.
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
		switch {
		case d == nil:
			return nil, fmt.Errorf("receiver: registry %s: device %s has no record", path, id)
		case len(d.SPKI) == 0 && !d.Revoked:
			return nil, fmt.Errorf("receiver: registry %s: device %s has no key", path, id)
		}
	}
	if r.FleetCAs == nil {
		r.FleetCAs = map[string]*fleetCA{}
	}
	for fp, ca := range r.FleetCAs {
		if ca == nil || fingerprint(ca.Cert) != fp {
			return nil, fmt.Errorf("receiver: registry %s: fleet CA %s: certificate does not match its fingerprint", path, fp)
		}
		if _, err := x509.ParseCertificate(ca.Cert); err != nil {
			return nil, fmt.Errorf("receiver: registry %s: fleet CA %s: %w", path, fp, err)
		}
	}
	return &r, nil
}

// registryHead is how many bytes of the file a request reads to learn the
// generation: `{`, a newline, two spaces, `"generation": `, 20 digits and a
// comma fit with room to spare.
const registryHead = 64

// generationPrefix is how the registry file written by updateRegistry
// begins; the generation's digits follow.
const generationPrefix = "{\n  \"generation\": "

// headGeneration finds the generation in the first bytes of a registry file
// as updateRegistry writes it. ok is false for any other layout (a file
// written by hand or by an older version): the reader then parses the whole
// file on every request, which is slow but never stale.
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

// registryReader reads a data directory's registry for a Server, keeping the
// parsed copy of its last full read only to compare with (see the comment at
// the top of this file). Registries it returns are shared: callers must not
// modify them (updateRegistry reads its own copy).
type registryReader struct {
	path string

	mu     sync.Mutex // held across a full read, so a burst of requests after a write parses once
	reg    *registry  // the last full read, nil if none (or its file had no generation)
	gen    uint64     // its generation
	info   os.FileInfo
	parses uint64 // full reads and parses, for tests and figures
}

func newRegistryReader(dir string) *registryReader {
	return &registryReader{path: filepath.Join(dir, registryFile)}
}

// sameFile reports whether two stats describe the same, unchanged file.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// read returns the registry as it is on disk now.
func (rr *registryReader) read() (*registry, error) {
	f, err := os.Open(rr.path)
	if errors.Is(err, os.ErrNotExist) {
		return emptyRegistry(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: read registry: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("receiver: read registry: %w", err)
	}
	var buf [registryHead]byte
	n, err := io.ReadFull(f, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("receiver: read registry: %w", err)
	}
	head := buf[:n]
	gen, hasGen := headGeneration(head)

	rr.mu.Lock()
	defer rr.mu.Unlock()
	if hasGen && rr.reg != nil && rr.gen == gen && sameFile(rr.info, info) {
		return rr.reg, nil
	}
	// Changed (or never read): read the rest of this very file, so head,
	// body and stat describe one version.
	rest, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("receiver: read registry: %w", err)
	}
	b := make([]byte, 0, len(head)+len(rest))
	b = append(append(b, head...), rest...)
	rr.parses++
	r, err := parseRegistry(rr.path, b)
	if err != nil {
		return nil, err
	}
	if hasGen && r.Generation == gen {
		rr.reg, rr.gen, rr.info = r, gen, info
	} else {
		rr.reg, rr.info = nil, nil
	}
	return r, nil
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
	r.Generation++
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
	err := updateRegistry(dir, func(r *registry) error {
		for i, k := range keys {
			if err := enrollKey(r, k.id, k.spki); err != nil {
				return err
			}
			if es[i].Owner != "" {
				r.Devices[k.id].Owner = es[i].Owner
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
			d.Via = ""
		}
		return nil
	}
	r.Devices[id] = &registration{SPKI: spki}
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
