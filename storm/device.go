package storm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/uploader"
)

// identity is a simulated device's key and the names the harness knows it by.
type identity struct {
	idx   int
	key   *ecdsa.PrivateKey
	id    string // provenance.DeviceID of key
	owner string // the owner it is paired to (ground truth)
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

// chain is a device's signing state during one run: the sequence number and
// the previous envelope's hash, as board persists them on a real device.
type chain struct {
	seq  uint64
	prev []byte
}

// device is one simulated camera in one run: its identity, its chain, its
// real spool on disk and its real uploader.
type device struct {
	*identity
	boot  string
	start time.Time // the run's boot time, for boot_ms

	mu    sync.Mutex // guards chain (records are made by one goroutine at a time, but phases hand over)
	chain chain

	spool *uploader.Spool
	up    *uploader.Uploader
}

// record signs the next record of an event and spools it; it returns the
// record's key in the ledger.
func (d *device) record(event, kind string, captured time.Time, dur time.Duration) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	thumb := thumbnail(d.id, event, kind)
	seq := d.chain.seq + 1
	p := &provenance.Payload{
		Device: d.id,
		Event:  event,
		Kind:   kind,
		Seq:    seq,
		Boot:   d.boot,
		Prev:   d.chain.prev,
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
	env, err := provenance.Sign(nil, d.key, p)
	if err != nil {
		return "", fmt.Errorf("storm: device %d: %w", d.idx, err)
	}
	bundle := provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}
	data, err := bundle.Marshal()
	if err != nil {
		return "", fmt.Errorf("storm: device %d: %w", d.idx, err)
	}
	// The chain moves on before the spool write, as on a device (a failed
	// write leaves a gap, never a reuse).
	h := provenance.HashEnvelope(env)
	d.chain = chain{seq: seq, prev: h[:]}
	if err := d.spool.Put(uploader.Record{Seq: seq, Event: event, Kind: kind, Data: data}); err != nil {
		return "", fmt.Errorf("storm: device %d: %w", d.idx, err)
	}
	return recordKey(d.id, event, kind), nil
}

// recordKey names a record in the ledger and in the receiver's index.
func recordKey(device, event, kind string) string { return device + "/" + event + "/" + kind }
