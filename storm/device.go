package storm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/uploader"
)

// identity is a simulated device's key and the names the harness knows it by.
type identity struct {
	idx   int
	key   *ecdsa.PrivateKey
	id    string // provenance.DeviceID of key
	owner string // the owner it is paired to (ground truth)
	// sealer seals the device's thumbnails to its owner's key set
	// (Config.E2EE); nil: thumbnails in the clear.
	sealer *e2ee.Sealer
}

// deviceKey derives device idx's P-256 key from seed: the scalar is the
// SHA-256 of the seed, the index and a counter (the first value that is a
// valid scalar). The same seed gives the same devices, so a run can be
// repeated; the keys are only ever in memory.
func deviceKey(seed uint64, idx int) (*ecdsa.PrivateKey, error) {
	var in [8 + 8 + 4 + 14]byte
	copy(in[20:], "keyframe-storm")
	binary.BigEndian.PutUint64(in[0:], seed)
	binary.BigEndian.PutUint64(in[8:], uint64(idx))
	for ctr := uint32(0); ctr < 16; ctr++ {
		binary.BigEndian.PutUint32(in[16:], ctr)
		sum := sha256.Sum256(in[:])
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), sum[:])
		if err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("storm: no valid key for device %d", idx)
}

// ownerName is the name of owner i.
func ownerName(i int) string { return fmt.Sprintf("owner-%d", i) }

// eventID names a device's k-th event (k 0 is the one uploaded before the
// outage).
func eventID(idx, k int) string { return fmt.Sprintf("ev-%d-%d", idx, k) }

// thumbnail is the small, unique stand-in JPEG of one record: a JPEG's start
// and end markers around text naming the device, event and kind, so the
// viewer can tell from the bytes whose image it was served.
func thumbnail(device, event, kind string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, 0xff, 0xd8, 0xff, 0xfe) // SOI, COM
	b = append(b, "keyframe storm "+device+" "+event+" "+kind...)
	return append(b, 0xff, 0xd9) // EOI
}

// memChain is a device's chain state during one run, in memory: a
// simulated device is not killed, and its records are signed and spooled
// through the device's own rule (recorder).
type memChain struct{ c board.Chain }

func (m *memChain) Load() (board.Chain, error) {
	if m.c.Next == 0 {
		return board.Chain{Next: 1}, nil // a new device
	}
	return m.c, nil
}
func (m *memChain) Save(c board.Chain) error { m.c = c; return nil }

// device is one simulated camera in one run: its identity, its recorder
// (chain in memory), its real spool on disk and its real uploader.
type device struct {
	*identity
	boot  string
	start time.Time // the run's boot time, for boot_ms

	rec   *recorder.Recorder // signs, advances the chain, then spools (records are made by one goroutine at a time, but phases hand over)
	spool *uploader.Spool
	up    *uploader.Uploader

	seals, sealNs atomic.Int64 // thumbnails sealed, and the time it took
}

// newDevice is identity's device in a run that booted at start, spooling to
// sp.
func newDevice(id *identity, boot string, start time.Time, sp *uploader.Spool) (*device, error) {
	rec, err := recorder.Open(recorder.Config{Chain: &memChain{}, Spool: sp, Key: id.key})
	if err != nil {
		return nil, fmt.Errorf("storm: device %d: %w", id.idx, err)
	}
	return &device{identity: id, boot: boot, start: start, rec: rec, spool: sp}, nil
}

// record signs the next record of an event and spools it; it returns the
// record's key in the ledger.
func (d *device) record(event, kind string, captured time.Time, dur time.Duration) (string, error) {
	thumb := thumbnail(d.id, event, kind)
	p := &provenance.Payload{
		Device: d.id,
		Event:  event,
		Kind:   kind,
		Boot:   d.boot,
		Time: provenance.Time{
			UnixMs: captured.UnixMilli(),
			BootMs: uint64(max(captured.Sub(d.start), 0) / time.Millisecond),
			Clock:  provenance.ClockSynced,
		},
		Motion: provenance.Motion{
			DurationMs:  uint64(dur / time.Millisecond),
			Frames:      uint32(1 + dur/(100*time.Millisecond)),
			PeakAreaPPM: 25000,
			Box:         [4]int32{10, 10, 90, 70},
			Width:       320,
			Height:      240,
		},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: "file",
	}
	media := func(*provenance.Payload) ([][]byte, error) { return [][]byte{thumb}, nil }
	if d.sealer != nil {
		// Sealed to the owner's set with the record's binding, once the
		// record's seq is known, as the agent does (docs/e2ee.md §7).
		media = func(p *provenance.Payload) ([][]byte, error) {
			t0 := time.Now()
			obj, err := d.sealer.Seal(e2ee.Binding{Device: p.Device, Event: p.Event, Seq: p.Seq, Role: provenance.RoleThumbnail}, thumb)
			d.sealNs.Add(int64(time.Since(t0)))
			d.seals.Add(1)
			if err != nil {
				return nil, err
			}
			p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, e2ee.SealedType, obj)}
			return [][]byte{obj}, nil
		}
	}
	// Signed, the chain moved on, then spooled, as on a device (a failed
	// write leaves a gap, never a reuse).
	if _, _, err := d.rec.RecordWith(p, media); err != nil {
		return "", fmt.Errorf("storm: device %d: %w", d.idx, err)
	}
	return recordKey(d.id, event, kind), nil
}

// recordKey names a record in the ledger and in the receiver's index.
func recordKey(device, event, kind string) string { return device + "/" + event + "/" + kind }
