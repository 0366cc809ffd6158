// Package recorder holds the device's one safety rule for records: sign the
// next record of the chain, save the chain state durably, and only then
// spool the record. A crash between the two leaves a gap in the sequence
// (visible to the owner through prev), never a reuse.
//
// The agent records events through a Recorder, `keyframe identity rotate`
// its rotate record (package recorder/rotation), and the storm harness its
// simulated devices' records. It also holds what the agent and `keyframe
// identity` share about a device's records: the data directory's Layout and
// the Stamper (boot ID, clock quality, time since boot).
//
// recorder is device-side: it imports board and uploader, and neither
// provenance nor receiver may import it.
package recorder

import (
	"crypto"
	"fmt"
	"io"
	"sync"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/uploader"
)

// ChainStore keeps the chain state: the sequence number the next record
// gets and the SHA-256 of the last envelope signed. Save must be durable
// when it returns.
type ChainStore interface {
	Load() (board.Chain, error)
	Save(board.Chain) error
}

// ChainFile is the chain state file at a path (board.LoadChain and
// board.SaveChain; a device's is Layout.Chain).
type ChainFile string

// Load reads the chain state; a missing file is a new device.
func (f ChainFile) Load() (board.Chain, error) { return board.LoadChain(string(f)) }

// Save writes the chain state atomically and durably.
func (f ChainFile) Save(c board.Chain) error { return board.SaveChain(string(f), c) }

// Spool takes a record once the chain has moved past it (*uploader.Spool).
type Spool interface {
	Put(uploader.Record) error
}

// Config is what a Recorder signs with and where its records go.
type Config struct {
	Chain ChainStore    // required
	Spool Spool         // required
	Key   crypto.Signer // the device key; required
	// CertChain, if not nil, is read for each record: the key's certificate
	// chain (DER, device certificate first) for the envelope's x5chain, or
	// nil for none.
	CertChain func() [][]byte
	Rand      io.Reader // signatures; nil: crypto/rand
	// Pending are records already signed and in the chain (a prepared key
	// rotation's rotate record); Open spools them before any new record.
	// Each must be below the chain's next sequence number.
	Pending []uploader.Record
}

// Recorder makes a device's records in chain order. It is safe for
// concurrent use; records are made one at a time.
type Recorder struct {
	cfg   Config
	mu    sync.Mutex
	chain board.Chain
}

// Open loads the chain state and spools the pending records.
func Open(c Config) (*Recorder, error) {
	if c.Chain == nil || c.Spool == nil || c.Key == nil {
		return nil, fmt.Errorf("recorder: chain state, spool and key are required")
	}
	chain, err := c.Chain.Load()
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	for _, p := range c.Pending {
		if p.Seq >= chain.Next {
			return nil, fmt.Errorf("recorder: the pending %s record %d is not in the chain (next %d)", p.Kind, p.Seq, chain.Next)
		}
		if err := c.Spool.Put(p); err != nil {
			return nil, fmt.Errorf("recorder: spool the pending %s record %d: %w", p.Kind, p.Seq, err)
		}
	}
	return &Recorder{cfg: c, chain: chain}, nil
}

// Chain is the chain state after the last record made.
func (r *Recorder) Chain() board.Chain {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chain
}

// Record makes p the chain's next record: it sets p.Seq and p.Prev from the
// chain, signs p with the key (provenance.SignWithChain), saves the chain
// state past it and spools the bundle of the envelope and media (the media
// bytes in payload order). It returns the record spooled. A failure before
// the chain state is saved leaves the chain where it was; a failure to spool
// leaves a gap.
func (r *Recorder) Record(p *provenance.Payload, media [][]byte) (uploader.Record, error) {
	rec, _, err := r.RecordHashed(p, media)
	return rec, err
}

// RecordHashed is Record that also returns the record's hash (the SHA-256
// of its envelope, docs/envelope.md §5), which an end record lists for each
// segment of its event's clip. When only the spooling failed, the hash is
// returned with the error: the record was signed and the chain moved past
// it, so a list that names it says truly that it was made and not
// delivered.
func (r *Recorder) RecordHashed(p *provenance.Payload, media [][]byte) (uploader.Record, [32]byte, error) {
	return r.RecordWith(p, func(*provenance.Payload) ([][]byte, error) { return media, nil })
}

// RecordWith is RecordHashed for media objects that depend on the record's
// sequence number (an object sealed to a binding that names it,
// docs/e2ee.md §4): media is called with p.Seq and p.Prev set, before p is
// signed, and returns the media objects in payload order, having set
// p.Media to list them. An error from it leaves the chain where it was.
func (r *Recorder) RecordWith(p *provenance.Payload, media func(*provenance.Payload) ([][]byte, error)) (uploader.Record, [32]byte, error) {
	return r.commit(p, func() (*provenance.Bundle, error) {
		m, err := media(p)
		if err != nil {
			return nil, err
		}
		env, err := provenance.SignWithChain(r.cfg.Rand, r.cfg.Key, p, r.certChain())
		if err != nil {
			return nil, err
		}
		return &provenance.Bundle{Envelope: env, Media: m}, nil
	})
}

// Rotate makes p the chain's next record as a rotate record handing the
// device's identity from the key to next (provenance.Rotate), as Record
// does. p gives Device, Event, Boot, Time and KeyStore.
func (r *Recorder) Rotate(next crypto.Signer, p *provenance.Payload) (uploader.Record, error) {
	rec, _, err := r.commit(p, func() (*provenance.Bundle, error) {
		return provenance.Rotate(r.cfg.Rand, r.cfg.Key, next, p, r.certChain())
	})
	return rec, err
}

func (r *Recorder) certChain() [][]byte {
	if r.cfg.CertChain == nil {
		return nil
	}
	return r.cfg.CertChain()
}

// commit is the rule: sign the next record, save the chain, then spool.
func (r *Recorder) commit(p *provenance.Payload, sign func() (*provenance.Bundle, error)) (uploader.Record, [32]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.Seq, p.Prev = r.chain.Next, r.chain.Prev
	b, err := sign()
	if err != nil {
		return uploader.Record{}, [32]byte{}, err
	}
	data, err := b.Marshal()
	if err != nil {
		return uploader.Record{}, [32]byte{}, err
	}
	// The chain advances durably before the record is spooled: after a crash a
	// sequence number may be skipped, never reused.
	h := provenance.HashEnvelope(b.Envelope)
	next := board.Chain{Next: p.Seq + 1, Prev: h[:]}
	if err := r.cfg.Chain.Save(next); err != nil {
		return uploader.Record{}, [32]byte{}, fmt.Errorf("recorder: %w", err)
	}
	r.chain = next
	rec := uploader.Record{Seq: p.Seq, Event: p.Event, Kind: p.Kind, Data: data}
	if err := r.cfg.Spool.Put(rec); err != nil {
		// Signed and chained, not spooled: the hash names the record
		// that will never arrive.
		return uploader.Record{}, h, fmt.Errorf("recorder: %w", err)
	}
	return rec, h, nil
}
