package storm

import (
	"context"
	"encoding/json"
	"errors"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"
)

// TestSmallStorm runs a whole storm and its control: 50 devices, 2 events
// each during a 2 s outage, a cache that lies at 20%. Nothing may be lost,
// stored twice or shown to the wrong owner, and the receiver must have
// caught mix-ups. The uploader's timings are scaled down (first retry within
// 1 s instead of 30 s) so the test is short; the peak request rates are
// timing-dependent on a shared machine and are measured by the real run
// (docs/storm.md), not asserted here.
func TestSmallStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a real storm of a few seconds; skipped with -short")
	}
	cfg := Config{
		Devices:    50,
		Events:     2,
		Owners:     5,
		Outage:     2 * time.Second,
		MixupRate:  0.2,
		Control:    true,
		NaiveRetry: 200 * time.Millisecond,
		Uploader: uploader.Config{
			RetryWindow: time.Second,
			QuickRetry:  200 * time.Millisecond,
			BackoffBase: 100 * time.Millisecond,
			BackoffCap:  time.Second,
			Rate:        50,
		},
		Seed:     1,
		Dir:      t.TempDir(),
		Ramp:     200,
		ViewRate: 100,
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Line())
	if res.Lost != 0 || res.Duplicates != 0 || res.Misattributed != 0 {
		t.Errorf("lost %d, duplicates %d, misattributed %d: want 0 each", res.Lost, res.Duplicates, res.Misattributed)
	}
	if !res.OK() {
		t.Errorf("result not OK: %+v", res)
	}
	if res.MixupsCaught == 0 {
		t.Errorf("the receiver caught no mix-ups with a cache lying at 20%%")
	}
	if res.Control == nil {
		t.Fatal("no control run")
	}
	const want = 50 * 2 * (2 + 1) // devices × (start, end) × (the first event + 2)
	for _, r := range []*RunStats{&res.Jittered, res.Control} {
		if r.Created != want || r.Stored != want || r.Unexpected != 0 || r.Undelivered != 0 || r.Quarantined != 0 || !r.Drained {
			t.Errorf("%s run: created %d stored %d unexpected %d undelivered %d quarantined %d drained %v; want %d created and stored",
				r.Mode, r.Created, r.Stored, r.Unexpected, r.Undelivered, r.Quarantined, r.Drained, want)
		}
		if r.PeakRPS <= 0 || len(r.RPS) == 0 || r.Statuses["201"] != 50*2*2 {
			t.Errorf("%s run: peak %d, windows %v, statuses %v; want the %d records of the outage stored after the return",
				r.Mode, r.PeakRPS, r.RPS, r.Statuses, 50*2*2)
		}
		if r.View.Views == 0 || r.View.Pages == 0 || r.View.EventsShown == 0 {
			t.Errorf("%s run: the viewer saw nothing: %+v", r.Mode, r.View)
		}
		if r.MixupsInjected == 0 {
			t.Errorf("%s run: the cache never lied", r.Mode)
		}
		if r.RegistryReads > 2 {
			t.Errorf("%s run: the registry was parsed %d times with no change to it", r.Mode, r.RegistryReads)
		}
		if r.PeakGoroutines == 0 || r.PeakHeapBytes == 0 {
			t.Errorf("%s run: resources not sampled: %+v", r.Mode, r)
		}
	}
	if res.Jittered.Mode != "jittered" || res.Control.Mode != "naive" {
		t.Errorf("modes %q, %q", res.Jittered.Mode, res.Control.Mode)
	}
	line := res.Line()
	for _, f := range []string{"storm: devices=50 ", " events=2 ", " lost=0 ", " duplicates=0 ", " misattributed=0 ", " peak_rps=", " control_peak_rps=", " drain_s=", " mixups_caught="} {
		if !strings.Contains(line, f) {
			t.Errorf("line %q lacks %q", line, f)
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || back["control_peak_rps"] == nil || back["jittered"] == nil {
		t.Errorf("JSON: %v\n%s", err, b)
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []Config{
		{Devices: 3, Owners: 4},
		{MixupRate: 1.5},
		{MixupRate: -0.1},
		{Devices: 2_000_000},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("Run accepted %+v", c)
		}
	}
	c := Config{Devices: 25}
	c.setDefaults()
	if c.Owners != 2 || c.Events != DefaultEvents || c.Outage != DefaultOutage || c.MixupRate != 0 {
		t.Errorf("defaults: %+v", c)
	}
}

func TestDeviceKeysAreDeterministic(t *testing.T) {
	id := func(seed uint64, i int) string {
		k, err := deviceKey(seed, i)
		if err != nil {
			t.Fatal(err)
		}
		s, err := provenance.DeviceID(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first, again := id(7, 3), id(7, 3)
	if first != again {
		t.Error("the same seed and index gave two keys")
	}
	if id(7, 3) == id(7, 4) || id(7, 3) == id(8, 3) {
		t.Error("different devices share a key")
	}
}

func TestFaultyCache(t *testing.T) {
	truth := map[string]string{"d1": "alice", "d2": "bob", "d3": "carol", "d4": "alice"}
	sourced := 0
	src := func(d string) (string, error) {
		sourced++
		o, ok := truth[d]
		if !ok {
			return "", errors.New("unknown device")
		}
		return o, nil
	}
	c := NewFaultyCache(src, 1, 42)
	for range 3 {
		for d, o := range truth {
			if got, err := c.OwnerOf(d); err != nil || got != o {
				t.Fatalf("disarmed cache: OwnerOf(%s) = %q, %v; want %q", d, got, err, o)
			}
		}
	}
	if sourced != len(truth) {
		t.Errorf("source asked %d times for %d devices: the cache does not cache", sourced, len(truth))
	}
	if _, err := c.OwnerOf("d9"); err == nil {
		t.Error("a source error was swallowed")
	}
	c.Arm(true)
	wrong := 0
	for range 200 {
		got, err := c.OwnerOf("d2")
		if err != nil {
			t.Fatal(err)
		}
		if got != "bob" {
			wrong++
			if got != "alice" && got != "carol" {
				t.Fatalf("mixed-up answer %q is no cached owner", got)
			}
		}
	}
	lookups, injected := c.Stats()
	if wrong == 0 || injected != uint64(wrong) || lookups < 200 {
		t.Errorf("rate 1: %d wrong answers of 200, %d counted injected, %d lookups", wrong, injected, lookups)
	}
	// A lower rate: about that share of the answers is wrong.
	c2 := NewFaultyCache(src, 0.25, 42)
	for d := range truth {
		c2.OwnerOf(d)
	}
	c2.Arm(true)
	for range 4000 {
		c2.OwnerOf("d3")
	}
	_, inj := c2.Stats()
	// Three of the four cached entries belong to someone else than carol.
	if want := 4000 * 0.25 * 3 / 4; float64(inj) < want*0.8 || float64(inj) > want*1.2 {
		t.Errorf("rate 0.25: %d wrong answers of 4000, want about %.0f", inj, want)
	}
	c2.Arm(false)
	if got, _ := c2.OwnerOf("d3"); got != "carol" {
		t.Errorf("disarmed again: %q", got)
	}
}

func TestTruthFindsMisattribution(t *testing.T) {
	ids := []*identity{{idx: 0, id: "dev0", owner: "owner-0"}, {idx: 1, id: "dev1", owner: "owner-1"}}
	tr := newTruth(ids, 2)
	good := receiver.EventView{Device: "dev0", Event: eventID(0, 1), Kind: "start", Owner: "owner-0"}
	if n, _ := tr.misattributed("owner-0", []receiver.EventView{good}); n != 0 {
		t.Errorf("an owner's own event counted as misattributed")
	}
	for name, ev := range map[string]receiver.EventView{
		"a stranger's device":       {Device: "dev1", Event: eventID(1, 1), Kind: "start", Owner: "owner-0"},
		"an unknown device":         {Device: "devX", Event: "ev-9-1", Kind: "start", Owner: "owner-0"},
		"another device's event":    {Device: "dev0", Event: eventID(1, 1), Kind: "start", Owner: "owner-0"},
		"the view names another":    {Device: "dev0", Event: eventID(0, 1), Kind: "start", Owner: "owner-1"},
		"event id prefix collision": {Device: "dev0", Event: "ev-01-1", Kind: "start", Owner: "owner-0"},
	} {
		n, first := tr.misattributed("owner-0", []receiver.EventView{good, ev})
		if n != 1 || first == "" {
			t.Errorf("%s: misattributed %d (%q), want 1", name, n, first)
		}
	}
}

// TestViewerCountsWhatItShouldNotSee points the viewer's HTTP checks at a
// server that serves anything to anyone: it must count every such object,
// so a zero from a real storm means nothing was served wrongly, not that
// the viewer could not tell.
func TestViewerCountsWhatItShouldNotSee(t *testing.T) {
	ids := []*identity{{idx: 0, id: strings.Repeat("a", 26), owner: "owner-0"}, {idx: 1, id: strings.Repeat("b", 26), owner: "owner-1"}}
	leak := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/":
			// A page listing the stranger's device.
			w.Write([]byte(`<td class="mono">` + ids[1].id + `<br>`))
		default:
			// The stranger's real thumbnail, whatever was asked.
			w.Write(thumbnail(ids[1].id, eventID(1, 0), provenance.KindStart))
		}
	}))
	defer leak.Close()
	v := &viewer{base: leak.URL, client: leak.Client(), truth: newTruth(ids, 2), rnd: mrand.New(mrand.NewPCG(1, 2))}
	ctx := context.Background()
	v.media(ctx, "owner-0", ids[1].id, eventID(1, 0), provenance.KindStart, 1, 0, true)  // a stranger's, served
	v.media(ctx, "owner-0", ids[0].id, eventID(0, 0), provenance.KindStart, 1, 0, false) // own, but the wrong bytes
	v.overHTTP(ctx, "owner-0", nil)                                                      // the page lists a stranger; the probe is served
	st := v.Stats()
	if st.Misattributed != 4 || st.FirstMistake == "" || st.Media != 0 {
		t.Errorf("viewer against a leaking server: %+v, want 4 misattributed", st)
	}
}

func TestTallyIndex(t *testing.T) {
	created := map[string]struct{}{
		recordKey("d1", "e1", "start"): {},
		recordKey("d1", "e1", "end"):   {},
		recordKey("d2", "e1", "start"): {},
	}
	index := `{"device":"d1","event":"e1","kind":"start","seq":1}
{"device":"d1","event":"e1","kind":"end","seq":2}
{"device":"d1","event":"e1","kind":"end","seq":2}
{"device":"d9","event":"e1","kind":"start","seq":1}
`
	got, err := tallyIndex(strings.NewReader(index), created)
	if err != nil {
		t.Fatal(err)
	}
	want := tally{Created: 3, Stored: 2, Lost: 1, Duplicates: 1, Unexpected: 1}
	if got != want {
		t.Errorf("tally %+v, want %+v", got, want)
	}
	if _, err := tallyIndex(strings.NewReader("{not json\n"), created); err == nil {
		t.Error("a corrupt index line was not an error")
	}
}

type stepClock struct{ t time.Time }

func (c *stepClock) now() time.Time { return c.t }

func TestMeter(t *testing.T) {
	clk := &stepClock{t: time.Unix(1000, 0)}
	m := newMeter(clk.now)
	h := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/events/busy/start" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	put := func(path string) {
		req := httptest.NewRequest(http.MethodPut, path, nil)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	put("/v1/events/e/start") // before the mark
	mark := m.Mark()
	if !mark.Equal(clk.t) {
		t.Fatalf("mark %v", mark)
	}
	for i, n := range []int{3, 0, 7, 1} {
		clk.t = mark.Add(time.Duration(i)*time.Second + 500*time.Millisecond)
		for range n {
			put("/v1/events/e/start")
		}
	}
	put("/v1/events/busy/start")
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil)) // not an upload
	if got := m.Windows(); len(got) != 4 || got[0] != 3 || got[1] != 0 || got[2] != 7 || got[3] != 2 {
		t.Errorf("windows %v, want [3 0 7 2]", got)
	}
	if m.Peak() != 7 || m.before != 1 {
		t.Errorf("peak %d, before %d; want 7, 1", m.Peak(), m.before)
	}
	if st := m.Statuses(); st["201"] != 11 || st["503"] != 1 || len(st) != 2 {
		t.Errorf("statuses %v", st)
	}
}

// Before the mark, a queued meter lets at most n uploads through at once;
// after it, all.
func TestMeterQueuesBeforeTheMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(time.Now)
		m.queueBefore(2)
		var mu sync.Mutex
		inside := 0
		release := make(chan struct{})
		h := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			inside++
			mu.Unlock()
			<-release
			mu.Lock()
			inside--
			mu.Unlock()
		}))
		run := func(n int) *sync.WaitGroup {
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/v1/events/e/start", nil))
				}()
			}
			return &wg
		}
		wg := run(6)
		synctest.Wait()
		if inside != 2 {
			t.Errorf("before the mark: %d uploads at once, want 2", inside)
		}
		close(release)
		wg.Wait()
		m.Mark()
		release = make(chan struct{})
		wg = run(6)
		synctest.Wait()
		if inside != 6 {
			t.Errorf("after the mark: %d uploads at once, want all 6", inside)
		}
		close(release)
		wg.Wait()
	})
}

func TestDrainQuantile(t *testing.T) {
	for _, c := range []struct {
		windows []int
		q       float64
		want    float64
	}{
		{nil, 0.99, 0},
		{[]int{0, 0}, 0.99, 0},
		{[]int{100}, 0.99, 1},
		{[]int{50, 49, 0, 1}, 0.99, 2},
		{[]int{50, 48, 0, 2}, 0.99, 4},
		{[]int{0, 10, 0, 0}, 1, 2},
	} {
		if got := drainQuantile(c.windows, c.q); got != c.want {
			t.Errorf("drainQuantile(%v, %v) = %v, want %v", c.windows, c.q, got, c.want)
		}
	}
}

// TestSmallStormSealed: the storm with every thumbnail sealed to its
// owner's key set (docs/e2ee.md): nothing lost, stored twice or shown to
// the wrong owner, every thumbnail the viewer was served opened by its
// owner's keys, and the seal cost counted.
func TestSmallStormSealed(t *testing.T) {
	if testing.Short() {
		t.Skip("a real storm of a few seconds; skipped with -short")
	}
	cfg := Config{
		Devices: 40, Events: 2, Owners: 4, Outage: time.Second, MixupRate: 0.2, E2EE: true,
		Uploader: uploader.Config{RetryWindow: time.Second, QuickRetry: 200 * time.Millisecond, BackoffBase: 100 * time.Millisecond, BackoffCap: time.Second, Rate: 50},
		Seed:     2, Dir: t.TempDir(), Ramp: 200, ViewRate: 100,
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Line())
	if !res.OK() || res.Lost != 0 || res.Duplicates != 0 || res.Misattributed != 0 {
		t.Fatalf("sealed storm: %s", res.Line())
	}
	j := res.Jittered
	const records = 40 * 2 * (2 + 1)
	if j.Seals != records || j.SealMsPerDevice <= 0 || j.SealUsMean <= 0 {
		t.Errorf("%d seals (want %d), %.3f ms a device, %.0f µs a seal", j.Seals, records, j.SealMsPerDevice, j.SealUsMean)
	}
	if j.View.Media == 0 || j.View.Envelopes == 0 {
		t.Errorf("the viewer opened no sealed thumbnail: %+v", j.View)
	}
	if !strings.Contains(res.Line(), " e2ee=sealed seals=") {
		t.Errorf("line %q does not give the seal figures", res.Line())
	}
}
