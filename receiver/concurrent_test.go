package receiver

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// TestConcurrentUploads sends many devices' records at once, each record
// twice at the same moment (a retry racing the original): every record is
// stored exactly once (one 201, one 200), nothing is refused as a replay,
// and the index reopens with every record.
func TestConcurrentUploads(t *testing.T) {
	e := newEnv(t, Options{MaxInFlight: 64})
	const devices, records = 8, 12
	devs := make([]*testDevice, devices)
	recs := make([][]*record, devices)
	for i := range devs {
		devs[i] = newDevice(t)
		e.enroll(devs[i], "alice")
		for s := range records {
			recs[i] = append(recs[i], devs[i].record(t, fmt.Sprintf("ev-%d", s), provenance.KindStart, uint64(s+1)))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, devices*records)
	for i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range recs[i] {
				codes := make([]int, 2)
				var both sync.WaitGroup
				for k := range codes {
					both.Add(1)
					go func() {
						defer both.Done()
						codes[k] = e.srv.Ingest(r.body, Claim{}).Status
					}()
				}
				both.Wait()
				if !(codes[0] == http.StatusCreated && codes[1] == http.StatusOK || codes[0] == http.StatusOK && codes[1] == http.StatusCreated) {
					errs <- fmt.Sprintf("device %d seq %d sent twice at once: %v, want one 201 and one 200", i, r.seq, codes)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	st := e.srv.Stats()
	if st.Stored != devices*records || st.Duplicates != devices*records || len(st.Rejected) != 0 {
		t.Fatalf("stats %+v, want %d stored, %d duplicates, no rejections", st, devices*records, devices*records)
	}
	e.close()
	e.open(Options{})
	if n := e.srv.Stats().Records; n != devices*records {
		t.Fatalf("reopened with %d records, want %d", n, devices*records)
	}
	rep, err := CheckStore(e.dir)
	if err != nil || !rep.OK() || rep.Verified != devices*records {
		t.Fatalf("CheckStore: %+v, %v", rep, err)
	}
}

// TestCloseDuringUploads closes the server while uploads are being stored:
// every upload answered 201 is in the index when the directory is opened
// again, and the store verifies.
func TestCloseDuringUploads(t *testing.T) {
	e := newEnv(t, Options{MaxInFlight: 64})
	const devices = 16
	devs := make([]*testDevice, devices)
	recs := make([]*record, devices)
	for i := range devs {
		devs[i] = newDevice(t)
		e.enroll(devs[i], "alice")
		recs[i] = devs[i].record(t, "ev", provenance.KindStart, 1)
	}
	codes := make([]int, devices)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = e.srv.Ingest(recs[i].body, Claim{}).Status
		}()
	}
	close(start)
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	e.srv = nil
	e.open(Options{})
	for i, c := range codes {
		stored := e.srv.lookup(devs[i].id, "ev", provenance.KindStart) != nil
		switch c {
		case http.StatusCreated:
			if !stored {
				t.Errorf("device %d: answered 201, not in the index after reopening", i)
			}
		case http.StatusServiceUnavailable:
			// Refused while closing: the device sends it again.
		default:
			t.Errorf("device %d: status %d during close, want 201 or 503", i, c)
		}
	}
	if rep, err := CheckStore(e.dir); err != nil || !rep.OK() {
		t.Fatalf("CheckStore after close during uploads: %+v, %v", rep, err)
	}
}
