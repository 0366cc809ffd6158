// Package storm reproduces the outage that keyframe exists for (README,
// "Why"): a fleet of cameras loses its cloud, keeps recording, and comes back
// all at once; the cloud is overloaded and a cache in front of the
// device→owner mapping mixes entries up. It runs N simulated devices in one
// process, each with its own key, its own spool on disk and the real
// uploader (uploader.New with the HTTP transport), against a real
// receiver.Server behind a loopback HTTP server, and measures:
//
//   - lost: records created (signed and spooled) but not in the receiver's
//     index; duplicates: records in the index more than once (identical
//     re-sends answered 200 are counted apart, as idempotent retries);
//   - misattributed: events, thumbnails or envelopes served to an owner other
//     than the one paired with their verified signer, as a viewer checking
//     everything it is served against the harness's ground truth sees them,
//     while the receiver's owner view selects events through a FaultyCache
//     that mixes devices up; mixups_caught: the receiver's count of mix-ups
//     its view-time check withheld;
//   - peak_rps: the most upload requests the receiver got in one second after
//     it came back, for the real (jittered) retry schedule and, in a control
//     run, for a naive fixed-interval retry (uploader.Config.Retry);
//     drain_s: the time from the receiver's return until every spool is
//     empty;
//   - the process's CPU time per phase, peak heap and goroutines.
//
// A run has three phases: (1) the receiver is up and every device uploads a
// first event (devices come online at Config.Ramp per second); (2) the
// receiver goes away (its listener and connections closed, so connections
// are refused) for Config.Outage while every device records Config.Events
// events (start and end records, each with its own small thumbnail) into its
// spool; (3) the receiver comes back on the same address, the mix-ups are
// armed and the viewer starts, until every spool has drained.
//
// Like motion/eval this is a harness, not part of the daemon: it measures
// wall time and runs for real (the network and the disks are real), so only
// its parts take an injected clock.
package storm

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"
)

// Defaults of Config.
const (
	DefaultDevices      = 1000
	DefaultEvents       = 3
	DefaultOutage       = 10 * time.Second
	DefaultMixupRate    = 0.02
	DefaultNaiveRetry   = time.Second
	DefaultRamp         = 250.0
	DefaultViewRate     = 50.0
	DefaultDrainTimeout = 10 * time.Minute
	// DefaultMaxConns caps the devices' shared HTTP transport's connections
	// to the receiver (further requests wait for one), so ten thousand
	// devices fit in one process's file descriptors.
	DefaultMaxConns = 2048
	// DevicesPerOwner is how many devices each owner has when Config.Owners
	// is 0.
	DevicesPerOwner = 10
)

// Config describes a storm. Zero fields take the defaults, except MixupRate
// (0: the cache never lies).
type Config struct {
	Devices   int           // simulated devices; DefaultDevices
	Events    int           // events each device records during the outage; DefaultEvents
	Owners    int           // owners owner-0..Owners-1, device i paired to owner i mod Owners; Devices/DevicesPerOwner (at least 1)
	Outage    time.Duration // how long the receiver is away (longer if the devices need longer to record); DefaultOutage
	MixupRate float64       // probability that the armed FaultyCache answers with another device's owner, 0 to 1

	// Control also runs the same storm with the naive retry (a fixed
	// NaiveRetry interval: no jitter, no random first retry) for
	// control_peak_rps.
	Control    bool
	NaiveRetry time.Duration // DefaultNaiveRetry

	// Uploader is the devices' upload loop configuration; zero fields take
	// the uploader's defaults, which are the agent's. Retry and
	// Delivered are set by the harness.
	Uploader uploader.Config

	Seed uint64 // keys, jitter, schedule and mix-ups derive from it; 0: a random seed (reported in the result)
	Dir  string // parent of the working directory (receiver data, spools); "": os.TempDir()
	Keep bool   // keep the working directories

	MaxConns     int           // cap on connections to the receiver; DefaultMaxConns, lowered to fit the file limit
	MaxInFlight  int           // the receiver's uploads at once (receiver.Options); 0: its default
	Ramp         float64       // devices brought online per second in phase 1; DefaultRamp
	ViewRate     float64       // owner views per second during phase 3; DefaultViewRate
	DrainTimeout time.Duration // give up waiting for a phase to drain; DefaultDrainTimeout

	// E2EE seals every thumbnail to its device's owner's key set (an
	// e2ee.Owner per owner, docs/e2ee.md), and the viewer opens what it
	// is served with the owner's keys.
	E2EE bool

	Log         *slog.Logger // progress (phases, figures); nil: discard
	ReceiverLog *slog.Logger // the receiver's log (mix-ups caught are warnings); nil: discard
}

func (c *Config) setDefaults() {
	if c.Devices <= 0 {
		c.Devices = DefaultDevices
	}
	if c.Events <= 0 {
		c.Events = DefaultEvents
	}
	if c.Owners <= 0 {
		c.Owners = max(1, c.Devices/DevicesPerOwner)
	}
	if c.Outage <= 0 {
		c.Outage = DefaultOutage
	}
	if c.NaiveRetry <= 0 {
		c.NaiveRetry = DefaultNaiveRetry
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if !(c.Ramp > 0) {
		c.Ramp = DefaultRamp
	}
	if !(c.ViewRate > 0) {
		c.ViewRate = DefaultViewRate
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Dir == "" {
		c.Dir = os.TempDir()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.ReceiverLog == nil {
		c.ReceiverLog = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) check() error {
	switch {
	case !(c.MixupRate >= 0 && c.MixupRate <= 1):
		return fmt.Errorf("storm: mix-up rate %v: want 0 to 1", c.MixupRate)
	case c.Owners > c.Devices:
		return fmt.Errorf("storm: %d owners for %d devices: want at most one owner per device", c.Owners, c.Devices)
	case c.Devices > 1_000_000:
		return fmt.Errorf("storm: %d devices: at most 1,000,000", c.Devices)
	case c.Events > 10_000:
		return fmt.Errorf("storm: %d events per device: at most 10,000", c.Events)
	}
	return nil
}

// CPU is process CPU time (user + system) in seconds, per phase. The devices
// and the receiver share the process, so this is their sum.
type CPU struct {
	Phase1 float64 `json:"phase1"`
	Outage float64 `json:"outage"`
	Storm  float64 `json:"storm"` // from the receiver's return until drained
	Total  float64 `json:"total"`
}

// RunStats are the figures of one storm (jittered or naive).
type RunStats struct {
	Mode string `json:"mode"` // "jittered" or "naive"

	Created           int    `json:"created"`            // records signed and spooled
	Stored            int    `json:"stored"`             // of those, in the receiver's index
	Lost              int    `json:"lost"`               // created, not in the index
	Duplicates        int    `json:"duplicates"`         // index lines beyond the first for a record
	Unexpected        int    `json:"unexpected"`         // index lines for records no device created
	IdempotentRetries uint64 `json:"idempotent_retries"` // identical re-sends the receiver answered 200
	Quarantined       int    `json:"quarantined"`        // records the devices quarantined (rejected by the receiver)
	Undelivered       int    `json:"undelivered"`        // records still in a spool when the run ended

	Misattributed  int       `json:"misattributed"`
	MixupsInjected uint64    `json:"mixups_injected"` // wrong answers the cache gave (most offered a device to an owner nobody was viewing)
	MixupsCaught   uint64    `json:"mixups_caught"`   // the receiver's count: events withheld from an owner the lookup offered them to
	DeniedViews    uint64    `json:"denied_views"`
	View           viewStats `json:"view"`

	PeakRPS int   `json:"peak_rps"` // most upload requests in one second after the return
	RPS     []int `json:"rps"`      // upload requests per second after the return
	// PeakAttempts and Attempts count the same at the devices: every upload
	// attempt started, including those that waited for a connection or were
	// refused one. When the receiver cannot answer as fast as the fleet
	// tries, the attempts show the load the fleet offered.
	PeakAttempts int               `json:"peak_attempts"`
	Attempts     []int             `json:"attempts"`
	Statuses     map[string]int    `json:"statuses"` // replies after the return, by status
	Rejected     map[string]uint64 `json:"rejected"` // the receiver's refusals, by reason
	Failures     int               `json:"upload_failures"`

	Phase1S float64 `json:"phase1_s"`
	OutageS float64 `json:"outage_s"`
	DrainS  float64 `json:"drain_s"` // from the return until the last record was acknowledged
	// Drain99S is the end of the one-second window (counted from the
	// return) by which 99% of the records pending at the return had been
	// acknowledged: the bulk of the drain without its slowest stragglers.
	Drain99S float64 `json:"drain_99_s"`
	Drained  bool    `json:"drained"`

	CPU            CPU    `json:"cpu_s"`
	PeakHeapBytes  uint64 `json:"peak_heap_bytes"`
	PeakGoroutines int    `json:"peak_goroutines"`
	OSThreads      int    `json:"os_threads"`
	RegistryReads  uint64 `json:"registry_reads"` // full registry parses by the receiver (all other requests reused one)
	MaxConns       int    `json:"max_conns"`

	// With Config.E2EE: thumbnails sealed, and the time sealing took per
	// device and per thumbnail (process time, the devices sharing the
	// machine with the receiver).
	Seals           int64   `json:"seals,omitempty"`
	SealMsPerDevice float64 `json:"seal_ms_per_device,omitempty"`
	SealUsMean      float64 `json:"seal_us_mean,omitempty"`
}

// Result is a storm's outcome: the jittered run's figures, the control's peak
// and drain, and the correctness figures summed over both runs.
type Result struct {
	Devices   int     `json:"devices"`
	Events    int     `json:"events"`
	Owners    int     `json:"owners"`
	MixupRate float64 `json:"mixup_rate"`
	Seed      uint64  `json:"seed"`

	Lost              int    `json:"lost"`
	Duplicates        int    `json:"duplicates"`
	IdempotentRetries uint64 `json:"idempotent_retries"`
	Misattributed     int    `json:"misattributed"`
	MixupsCaught      uint64 `json:"mixups_caught"`

	PeakRPS        int     `json:"peak_rps"`
	ControlPeakRPS int     `json:"control_peak_rps"` // 0 without a control run
	DrainS         float64 `json:"drain_s"`
	ControlDrainS  float64 `json:"control_drain_s"`

	Jittered RunStats  `json:"jittered"`
	Control  *RunStats `json:"control,omitempty"`

	E2EE bool `json:"e2ee,omitempty"` // thumbnails sealed (Config.E2EE); the jittered run's seal figures
}

// OK reports whether the storm lost, duplicated and misattributed nothing
// and every run drained.
func (r *Result) OK() bool {
	ok := r.Lost == 0 && r.Duplicates == 0 && r.Misattributed == 0 && r.Jittered.Drained && r.Jittered.Unexpected == 0
	if r.Control != nil {
		ok = ok && r.Control.Drained && r.Control.Unexpected == 0
	}
	return ok
}

// Line is the one-line summary.
func (r *Result) Line() string {
	line := fmt.Sprintf("storm: devices=%d events=%d lost=%d duplicates=%d misattributed=%d peak_rps=%d control_peak_rps=%d drain_s=%.1f mixups_caught=%d",
		r.Devices, r.Events, r.Lost, r.Duplicates, r.Misattributed, r.PeakRPS, r.ControlPeakRPS, r.DrainS, r.MixupsCaught)
	if r.E2EE {
		line += fmt.Sprintf(" e2ee=sealed seals=%d seal_ms_per_device=%.2f seal_us_mean=%.0f", r.Jittered.Seals, r.Jittered.SealMsPerDevice, r.Jittered.SealUsMean)
	}
	return line
}

// Run runs the storm (and its control, if cfg.Control) and returns the
// figures. An error means the harness itself failed (a directory, a port);
// a storm that lost or misattributed records is a Result that is not OK.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("storm: seed: %w", err)
		}
		cfg.Seed = binary.BigEndian.Uint64(b[:]) | 1
	}
	if limit, err := raiseFileLimit(); err != nil {
		cfg.Log.Warn("storm: cannot raise the open-file limit", "err", err)
	} else if limit > 0 {
		// Each connection is two descriptors (both ends are in this
		// process); keep room for the spools and the rest.
		cfg.MaxConns = max(1, min(cfg.MaxConns, int(limit/2)-512))
	}
	cfg.MaxConns = min(cfg.MaxConns, cfg.Devices)

	ids, err := identities(cfg)
	if err != nil {
		return nil, err
	}
	keys, err := ownerKeys(cfg, ids)
	if err != nil {
		return nil, err
	}
	res := &Result{Devices: cfg.Devices, Events: cfg.Events, Owners: cfg.Owners, MixupRate: cfg.MixupRate, Seed: cfg.Seed, E2EE: cfg.E2EE}
	j, err := runOnce(ctx, cfg, ids, keys, false)
	if err != nil {
		return nil, err
	}
	res.Jittered = *j
	res.add(j)
	res.PeakRPS, res.DrainS = j.PeakRPS, j.DrainS
	if cfg.Control {
		c, err := runOnce(ctx, cfg, ids, keys, true)
		if err != nil {
			return nil, err
		}
		res.Control = c
		res.add(c)
		res.ControlPeakRPS, res.ControlDrainS = c.PeakRPS, c.DrainS
	}
	return res, nil
}

func (r *Result) add(s *RunStats) {
	r.Lost += s.Lost
	r.Duplicates += s.Duplicates
	r.IdempotentRetries += s.IdempotentRetries
	r.Misattributed += s.Misattributed
	r.MixupsCaught += s.MixupsCaught
}

// identities derives the devices' keys (in parallel: ten thousand P-256 keys
// take a moment) and pairs device i with owner i mod Owners.
func identities(cfg Config) ([]*identity, error) {
	ids := make([]*identity, cfg.Devices)
	workers := max(1, runtime.GOMAXPROCS(0))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cfg.Devices; i += workers {
				k, err := deviceKey(cfg.Seed, i)
				if err == nil {
					var id string
					if id, err = provenance.DeviceID(k.Public()); err == nil {
						ids[i] = &identity{idx: i, key: k, id: id, owner: ownerName(i % cfg.Owners)}
						continue
					}
				}
				errs[w] = err
				return
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ids, nil
}

// ownerKeys makes an e2ee owner (one key) per owner with Config.E2EE, and
// gives each device the sealer of its owner's key set; nil without.
func ownerKeys(cfg Config, ids []*identity) (map[string]*e2ee.Owner, error) {
	if !cfg.E2EE {
		return nil, nil
	}
	keys := make(map[string]*e2ee.Owner, cfg.Owners)
	sealers := make([]*e2ee.Sealer, cfg.Owners)
	for i := range cfg.Owners {
		o, err := e2ee.NewOwner(1)
		if err != nil {
			return nil, fmt.Errorf("storm: %w", err)
		}
		ks, err := o.KeySet(1)
		if err != nil {
			return nil, fmt.Errorf("storm: %w", err)
		}
		if sealers[i], err = e2ee.NewSealer(ks); err != nil {
			return nil, fmt.Errorf("storm: %w", err)
		}
		keys[ownerName(i)] = o
	}
	for _, id := range ids {
		id.sealer = sealers[id.idx%cfg.Owners]
	}
	return keys, nil
}

// sampler records the process's peak heap and goroutines.
type sampler struct {
	mu         sync.Mutex
	heap       uint64
	goroutines int
}

func (s *sampler) sample() {
	ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/sched/goroutines:goroutines"}}
	metrics.Read(ms)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ms[0].Value.Kind() == metrics.KindUint64 {
		s.heap = max(s.heap, ms[0].Value.Uint64())
	}
	if ms[1].Value.Kind() == metrics.KindUint64 {
		s.goroutines = max(s.goroutines, int(ms[1].Value.Uint64()))
	}
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// cpuNow returns the process CPU time in seconds (0 where unsupported).
func cpuNow() float64 {
	u, s, err := processCPU()
	if err != nil {
		return 0
	}
	return (u + s).Seconds()
}

// storm is one run's state.
type storm struct {
	cfg     Config
	naive   bool
	devices []*device
	created map[string]struct{}
	cmu     sync.Mutex // guards created

	delivered atomic.Int64
	spooled   atomic.Int64
	lastAck   atomic.Int64 // UnixNano of the last acknowledgement
	acks      *meter       // acknowledgements per second after the return
}

func (st *storm) noteCreated(k string) {
	st.cmu.Lock()
	st.created[k] = struct{}{}
	st.cmu.Unlock()
	st.spooled.Add(1)
}

// settled reports whether every spooled record was acknowledged or
// quarantined.
func (st *storm) settled() bool {
	done := st.delivered.Load()
	if done >= st.spooled.Load() {
		return true
	}
	q := 0
	for _, d := range st.devices {
		q += d.up.Stats().Quarantined
	}
	return done+int64(q) >= st.spooled.Load()
}

// waitSettled polls until settled, ctx is done or the timeout passes.
func (st *storm) waitSettled(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		// The quarantine check walks every device: only now and then.
		if st.delivered.Load() >= st.spooled.Load() || (n%25 == 0 && st.settled()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// runOnce runs one storm over fresh directories.
func runOnce(ctx context.Context, cfg Config, ids []*identity, keys map[string]*e2ee.Owner, naive bool) (_ *RunStats, err error) {
	mode := "jittered"
	if naive {
		mode = "naive"
	}
	rs := &RunStats{Mode: mode, MaxConns: cfg.MaxConns}
	log := cfg.Log.With("run", mode)
	work, err := os.MkdirTemp(cfg.Dir, "keyframe-storm-")
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	if cfg.Keep {
		log.Info("storm: working directory kept", "dir", work)
	} else {
		defer os.RemoveAll(work)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The registry: every device enrolled and paired in one write.
	rdir := filepath.Join(work, "receiver")
	es := make([]receiver.Enrollment, len(ids))
	for i, id := range ids {
		es[i] = receiver.Enrollment{PublicKey: id.key.Public(), Owner: id.owner}
	}
	if _, err := receiver.EnrollAll(rdir, es); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	var srv *receiver.Server
	runSeed := cfg.Seed ^ 0x5bd1e995
	if naive {
		runSeed ^= 0xc2b2ae35
	}
	cache := NewFaultyCache(func(d string) (string, error) { return srv.PairedOwner(d) }, cfg.MixupRate, runSeed)
	srv, err = receiver.Open(receiver.Options{Dir: rdir, Logger: cfg.ReceiverLog, OwnerLookup: cache, MaxInFlight: cfg.MaxInFlight})
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	defer func() {
		if cerr := srv.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("storm: %w", cerr)
		}
	}()
	m := newMeter(time.Now)
	// Phase 1 is set-up, not the storm: uploads queue for the receiver's
	// slots instead of meeting 503s (and the devices' outage window).
	m.queueBefore(cmp.Or(cfg.MaxInFlight, receiver.DefaultMaxInFlight))
	handler := m.wrap(srv.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("storm: listen: %w", err)
	}
	addr := ln.Addr().String()
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()

	// The devices: a spool each, the real uploader, one shared transport.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        cfg.MaxConns,
		MaxIdleConnsPerHost: cfg.MaxConns,
		MaxConnsPerHost:     cfg.MaxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	httpTransport, err := uploader.NewHTTP("http://"+addr, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	attempts := newMeter(time.Now)
	transport := countingTransport{next: httpTransport, m: attempts}
	st := &storm{cfg: cfg, naive: naive, created: make(map[string]struct{}, len(ids)*2*(cfg.Events+1)), acks: newMeter(time.Now)}
	quiet := slog.New(slog.DiscardHandler)
	start := time.Now()
	ucfg := cfg.Uploader
	if naive {
		ucfg.Retry = func(time.Duration) time.Duration { return cfg.NaiveRetry }
	}
	for _, id := range ids {
		sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: filepath.Join(work, "spools", strconv.Itoa(id.idx)), Logger: quiet})
		if err != nil {
			return nil, fmt.Errorf("storm: %w", err)
		}
		d, err := newDevice(id, fmt.Sprintf("boot-%d", id.idx), start, sp)
		if err != nil {
			return nil, err
		}
		c := ucfg
		c.Delivered = func(uploader.Entry) {
			now := time.Now()
			st.delivered.Add(1)
			st.lastAck.Store(now.UnixNano())
			st.acks.count(now, http.StatusOK)
		}
		rnd := mrand.New(mrand.NewPCG(runSeed, uint64(id.idx)))
		d.up = uploader.New(c, sp, transport, nil, rnd, quiet)
		st.devices = append(st.devices, d)
	}
	var ups sync.WaitGroup
	upCtx, stopUploads := context.WithCancel(ctx)
	defer func() { stopUploads(); ups.Wait() }()
	for _, d := range st.devices {
		ups.Add(1)
		go func() {
			defer ups.Done()
			d.up.Run(upCtx)
		}()
	}
	smp := &sampler{}
	smpCtx, stopSampler := context.WithCancel(ctx)
	defer stopSampler()
	go smp.run(smpCtx, 200*time.Millisecond)

	cpu0 := cpuNow()
	// Phase 1: devices come online at cfg.Ramp per second and upload a first
	// event; wait until all of it is stored.
	log.Info("storm: phase 1: devices come online", "devices", len(st.devices), "addr", addr)
	t1 := time.Now()
	if err := st.phase1(ctx); err != nil {
		return nil, err
	}
	if !st.waitSettled(ctx, cfg.DrainTimeout) {
		return nil, fmt.Errorf("storm: phase 1 did not drain within %v (%d of %d records acknowledged)", cfg.DrainTimeout, st.delivered.Load(), st.spooled.Load())
	}
	rs.Phase1S = time.Since(t1).Seconds()
	cpu1 := cpuNow()

	// Phase 2: the outage.
	log.Info("storm: phase 2: the receiver goes away", "outage", cfg.Outage)
	if err := hs.Close(); err != nil {
		return nil, fmt.Errorf("storm: outage: %w", err)
	}
	t2 := time.Now()
	if err := st.phase2(ctx, runSeed); err != nil {
		return nil, err
	}
	if wait := cfg.Outage - time.Since(t2); wait > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	rs.OutageS = time.Since(t2).Seconds()
	cpu2 := cpuNow()

	// Phase 3: the receiver comes back on the same address.
	ln2, err := relisten(ctx, addr)
	if err != nil {
		return nil, err
	}
	hs2 := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	mark := m.Mark()
	st.acks.Mark()
	attempts.Mark()
	go hs2.Serve(ln2)
	defer hs2.Close()
	cache.Arm(true)
	log.Info("storm: phase 3: the receiver is back", "pending", st.spooled.Load()-st.delivered.Load())
	viewTr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer viewTr.CloseIdleConnections()
	vw := &viewer{
		srv: srv, base: "http://" + addr, truth: newTruth(ids, cfg.Owners), keys: keys,
		signIn:    ownerSignIn(rdir, "http://"+addr, viewTr),
		rnd:       mrand.New(mrand.NewPCG(runSeed, 0x76696577)),
		rate:      cfg.ViewRate,
		httpEvery: 10,
	}
	viewCtx, stopViews := context.WithCancel(ctx)
	var views sync.WaitGroup
	views.Add(1)
	go func() { defer views.Done(); vw.run(viewCtx) }()
	rs.Drained = st.waitSettled(ctx, cfg.DrainTimeout)
	stopViews()
	views.Wait()
	cache.Arm(false)
	if last := st.lastAck.Load(); last > 0 && rs.Drained {
		rs.DrainS = max(0, time.Unix(0, last).Sub(mark).Seconds())
	} else {
		rs.DrainS = time.Since(mark).Seconds()
	}
	rs.Drain99S = drainQuantile(st.acks.Windows(), 0.99)
	cpu3 := cpuNow()
	rs.CPU = CPU{Phase1: cpu1 - cpu0, Outage: cpu2 - cpu1, Storm: cpu3 - cpu2, Total: cpu3 - cpu0}
	log.Info("storm: drained", "drained", rs.Drained, "drain_s", rs.DrainS)

	stopUploads()
	ups.Wait()
	stopSampler()
	smp.sample()
	for _, d := range st.devices {
		us, ss := d.up.Stats(), d.spool.Stats()
		rs.Quarantined += us.Quarantined + ss.Corrupt
		rs.Failures += us.Failures
		rs.Undelivered += ss.Pending
		rs.Seals += d.seals.Load()
		rs.SealMsPerDevice += float64(d.sealNs.Load()) / 1e6
	}
	if rs.Seals > 0 {
		rs.SealUsMean = rs.SealMsPerDevice * 1e3 / float64(rs.Seals)
		rs.SealMsPerDevice /= float64(len(st.devices))
	}
	if err := hs2.Close(); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	sst := srv.Stats()
	rs.IdempotentRetries = sst.Duplicates
	rs.MixupsCaught = sst.MixupsCaught
	rs.DeniedViews = sst.DeniedViews
	rs.Rejected = sst.Rejected
	rs.RegistryReads = srv.RegistryReads()
	_, rs.MixupsInjected = cache.Stats()
	rs.View = vw.Stats()
	rs.Misattributed = rs.View.Misattributed
	rs.RPS = m.Windows()
	rs.PeakRPS = m.Peak()
	rs.Statuses = m.Statuses()
	rs.Attempts = attempts.Windows()
	rs.PeakAttempts = attempts.Peak()
	rs.PeakHeapBytes, rs.PeakGoroutines = smp.heap, smp.goroutines
	rs.OSThreads, _ = runtime.ThreadCreateProfile(nil)

	// The ledger: every record created must be in the index exactly once.
	t, err := tallyIndexFile(filepath.Join(rdir, "index.jsonl"), st.created)
	if err != nil {
		return nil, err
	}
	rs.Created, rs.Stored, rs.Lost, rs.Duplicates, rs.Unexpected = t.Created, t.Stored, t.Lost, t.Duplicates, t.Unexpected
	log.Info("storm: run done", "created", rs.Created, "lost", rs.Lost, "duplicates", rs.Duplicates,
		"misattributed", rs.Misattributed, "mixups_caught", rs.MixupsCaught, "peak_rps", rs.PeakRPS)
	return rs, nil
}

// countingTransport counts the upload attempts of the devices.
type countingTransport struct {
	next uploader.Transport
	m    *meter
}

func (c countingTransport) Send(ctx context.Context, r uploader.Record) error {
	c.m.count(c.m.now(), 0)
	return c.next.Send(ctx, r)
}

// drainQuantile returns the end (in seconds from the first window's start)
// of the window by which the share q of all acknowledgements counted in
// windows had arrived, or 0 if there were none.
func drainQuantile(windows []int, q float64) float64 {
	total := 0
	for _, n := range windows {
		total += n
	}
	if total == 0 {
		return 0
	}
	sum := 0
	for i, n := range windows {
		sum += n
		if float64(sum) >= q*float64(total) {
			return float64(i + 1)
		}
	}
	return float64(len(windows))
}

// writers bounds the devices recording at once: each record is an fsync'd
// file, and a blocked fsync holds an OS thread.
const writers = 64

// phase1 brings the devices online at cfg.Ramp per second, each recording
// its first event (start and end).
func (st *storm) phase1(ctx context.Context) error {
	jobs := make(chan *device)
	errc := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				now := time.Now()
				if err := st.event(d, 0, now, 800*time.Millisecond); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	t0 := time.Now()
	interval := time.Duration(float64(time.Second) / st.cfg.Ramp)
	var err error
feed:
	for i, d := range st.devices {
		if wait := time.Until(t0.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-ctx.Done():
				err = ctx.Err()
				break feed
			case <-time.After(wait):
			}
		}
		select {
		case jobs <- d:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

// event records a device's k-th event: its start record and its end record.
func (st *storm) event(d *device, k int, at time.Time, dur time.Duration) error {
	ev := eventID(d.idx, k)
	for _, rec := range []struct {
		kind string
		at   time.Time
		dur  time.Duration
	}{{provenance.KindStart, at, 0}, {provenance.KindEnd, at.Add(dur), dur}} {
		key, err := d.record(ev, rec.kind, rec.at, rec.dur)
		if err != nil {
			return err
		}
		st.noteCreated(key)
	}
	return nil
}

// phase2 has every device record cfg.Events events at random moments in the
// first 80% of the outage (or as fast as the disks allow, if slower).
func (st *storm) phase2(ctx context.Context, seed uint64) error {
	type job struct {
		at time.Duration
		d  *device
		k  int
	}
	rnd := mrand.New(mrand.NewPCG(seed, 0x6f757461))
	span := max(int64(st.cfg.Outage)*8/10, 1)
	// One channel per device, its events in time order: a device records
	// one event at a time.
	perDevice := make([]chan job, len(st.devices))
	for i, d := range st.devices {
		ats := make([]time.Duration, st.cfg.Events)
		for k := range ats {
			ats[k] = time.Duration(rnd.Int64N(span))
		}
		slices.Sort(ats)
		perDevice[i] = make(chan job, len(ats))
		for k, at := range ats {
			perDevice[i] <- job{at: at, d: d, k: k + 1}
		}
	}
	t0 := time.Now()
	sem := make(chan struct{}, writers)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for _, ch := range perDevice {
		close(ch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if wait := time.Until(t0.Add(j.at)); wait > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(wait):
					}
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				dur := 500*time.Millisecond + time.Duration(j.k)*100*time.Millisecond
				err := st.event(j.d, j.k, time.Now(), dur)
				<-sem
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return ctx.Err()
}

// relisten listens on addr again (the port was the receiver's before the
// outage), retrying for a few seconds if it is still being released.
func relisten(ctx context.Context, addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("storm: the receiver cannot come back on %s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
