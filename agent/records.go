package agent

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/clip"
	"github.com/keyframe-cam/keyframe/motion"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
)

// recordSlots is how many frames the frame loop can hand to the record
// worker before it has finished one: two whole events' start and end.
const recordSlots = 4

// Kinds of jobs that are not a record's (provenance.KindStart, KindEnd):
// jobSnapshot publishes a frame's thumbnail for the MQTT snapshot command;
// jobCut signs an event's clip up to a frame time as segments (clipper),
// and holds no frame.
const (
	jobSnapshot = "snapshot"
	jobCut      = "cut"
)

// job is one piece of work for the record worker: a record of an event
// from the frame in slot, captured at stamp from src; or a snapshot.
type job struct {
	kind, event string
	slot        int // the frame's slot; -1 for a cut, which has none
	sum         motion.Summary
	stamp       recorder.Stamp
	src         *provenance.Source
	cursor      *clip.Cursor // a start's: the clip's cursor on the ring (nil: no clip)
	until       time.Time    // a cut's: the last frame time to sign
	clock       clipTime     // a start's, cut's or end's: the clock for its clip's frames
}

// droppable reports whether a full queue may drop the job. Records never
// are; a snapshot is (and the clip data to come will be).
func (j job) droppable() bool { return j.kind == jobSnapshot }

// recordQueue keeps the slow work off the frame path: thumbnail encoding,
// signing (a TPM on SPI takes about 100 ms a signature), saving the chain
// state and spooling (an SD card's fsync takes tens to hundreds of ms). The
// frame loop hands over a copy of the frame and what the record needs
// (hand), and one worker (run) does the jobs in the order handed over, so
// records keep chain order.
//
// It is bounded: recordSlots frame buffers, reused (once each has held a
// frame of the size, handing over allocates nothing), each busy from hand
// until the worker has done its job. When none is free, the oldest
// droppable job still waiting gives up its slot (counted in dropped and
// logged); a droppable job that finds none is dropped itself. A record is
// never dropped: when every slot holds a record the frame loop waits for
// the worker to finish one (counted in waits and logged). The lifecycle
// makes that rare: an event is one start and one end, so the worker must
// be more than two whole events behind.
type recordQueue struct {
	do func(job, *capture.Frame) // the work, on the worker's goroutine

	mu     sync.Mutex
	frames [recordSlots]capture.Frame
	free   []int // slots not in use
	queue  []job // handed over, not yet taken by the worker, oldest first
	closed bool

	work  chan struct{} // a job was queued, or the queue closed
	freed chan struct{} // a slot was freed
	done  chan struct{} // closed once the worker has stopped

	dropped atomic.Uint64 // droppable jobs dropped because every slot was busy
	waits   atomic.Uint64 // times the frame loop waited for a slot for a record
}

func newRecordQueue(do func(job, *capture.Frame)) *recordQueue {
	q := &recordQueue{
		do:    do,
		free:  make([]int, 0, recordSlots),
		queue: make([]job, 0, recordSlots),
		work:  make(chan struct{}, 1),
		freed: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	for i := range recordSlots {
		q.free = append(q.free, i)
	}
	return q
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// hand queues j with a copy of f. It returns the job dropped to make room
// (j itself when j was), or a job of kind "" when none was, and whether it
// waited for the worker, which it does only for a record (see recordQueue).
func (q *recordQueue) hand(j job, f *capture.Frame) (dropped job, waited bool) {
	q.mu.Lock()
	for len(q.free) == 0 {
		if i := slices.IndexFunc(q.queue, job.droppable); i >= 0 {
			dropped = q.queue[i]
			q.queue = slices.Delete(q.queue, i, i+1)
			q.free = append(q.free, dropped.slot)
			q.dropped.Add(1)
			break
		}
		if j.droppable() {
			q.mu.Unlock()
			q.dropped.Add(1)
			return j, waited
		}
		q.mu.Unlock()
		if !waited {
			q.waits.Add(1)
			waited = true
		}
		<-q.freed
		q.mu.Lock()
	}
	j.slot = q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	q.mu.Unlock()
	// The slot is the frame loop's alone until queued.
	f.CopyTo(&q.frames[j.slot])
	q.mu.Lock()
	q.queue = append(q.queue, j)
	q.mu.Unlock()
	signal(q.work)
	return dropped, waited
}

// cut queues j, a clip cut, without a frame. A cut of the same event still
// queued is moved on to j's time instead (the worker reads the ring up to the
// latest time asked), so at most one cut per event waits, and cut never
// waits itself.
func (q *recordQueue) cut(j job) {
	q.mu.Lock()
	for i := range q.queue {
		if q.queue[i].kind == jobCut && q.queue[i].event == j.event {
			q.queue[i].until, q.queue[i].clock = j.until, j.clock
			q.mu.Unlock()
			return
		}
	}
	j.slot = -1
	q.queue = append(q.queue, j)
	q.mu.Unlock()
	signal(q.work)
}

// run does the queued jobs in order until the queue is closed and empty.
func (q *recordQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.queue) == 0 {
			if q.closed {
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.work
			q.mu.Lock()
		}
		j := q.queue[0]
		q.queue = q.queue[:copy(q.queue, q.queue[1:])]
		q.mu.Unlock()
		if j.slot < 0 {
			q.do(j, nil)
			continue
		}
		q.do(j, &q.frames[j.slot])
		q.mu.Lock()
		q.free = append(q.free, j.slot)
		q.mu.Unlock()
		signal(q.freed)
	}
}

// close lets the worker finish the jobs queued and waits until it has.
func (q *recordQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.work)
	<-q.done
}
