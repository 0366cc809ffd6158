//go:build linux

package m2m

import (
	"encoding/binary"
	"slices"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keyframe-cam/keyframe/capture"
)

// fakeEncoder is a scripted stateful encoder behind the device seam: it
// answers the ioctls the way a vb2/mem2mem driver does (formats per queue,
// MMAP buffers, QBUF/DQBUF, the timestamp copied from OUTPUT to CAPTURE,
// drain with V4L2_BUF_FLAG_LAST then EPIPE) and "encodes" each OUTPUT
// buffer at once into a small H.264 (or FWHT) frame. Its exported-style
// knobs are set by the tests before Open.
type fakeEncoder struct {
	mu sync.Mutex

	// Knobs.
	mplane      bool
	coded, raws []capture.PixelFormat
	ctrls       map[uint32]bool // supported controls
	padStride   int             // bytes the driver adds to each OUTPUT line
	padHeight   int             // lines the driver adds to the OUTPUT height
	gop         int             // key frame every gop frames (0: only the first and forced ones)
	separatePS  bool            // H.264 parameter sets in a buffer of their own
	keyFlag     bool            // set V4L2_BUF_FLAG_KEYFRAME on key frames
	errorAt     map[int]bool    // frame numbers whose coded buffer is flagged ERROR
	goneAt      int             // after this many frames the device is unplugged (0: never)
	keepRaw     bool            // keep a copy of each OUTPUT buffer's payload
	noQueryCap  bool            // VIDIOC_QUERYCAP fails (not a V4L2 device)
	notM2M      bool            // a capture device, not an M2M one
	rateRefused bool            // VIDIOC_S_PARM fails
	noSum       bool            // skip the checksum (benchmarks: the encoder's cost alone)
	badStamp    bool            // return a timestamp no frame had

	// State.
	codec, rawFmt  uint32
	width, height  uint32
	stride, size   uint32
	codedSize      uint32
	out, cap       [][]byte
	outQ, capQ     ring[int]   // queued, not yet processed
	outDone        ring[int]   // processed, to dequeue
	capDone        ring[fbuf]  // filled, to dequeue
	chunks         ring[chunk] // coded data waiting for a CAPTURE buffer
	outTS          map[int]unix.Timeval
	outUsed        map[int]uint32
	streaming      [2]bool
	frames         int
	forceKey       bool
	draining       bool
	lastDequeued   bool
	gone           bool
	closed         bool
	unmapped       int
	ctrlValues     map[uint32]int32
	raw            [][]byte // payloads of the OUTPUT buffers (keepRaw)
	encoderCmds    int
	rateSet        [2]uint32
	crop           [2]uint32
	queuedCaptures int
}

type fbuf struct {
	idx   int
	used  uint32
	flags uint32
	ts    unix.Timeval
}

// ring is a fixed queue, so the fake allocates nothing per frame either.
type ring[T any] struct {
	buf     [40]T
	head, n int
}

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		panic("fake: ring full")
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

func (r *ring[T]) pop() T {
	v := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}

func (r *ring[T]) at(i int) *T { return &r.buf[(r.head+i)%len(r.buf)] }

func (r *ring[T]) len() int { return r.n }

func contains(r *ring[int], v int) bool {
	for i := range r.n {
		if *r.at(i) == v {
			return true
		}
	}
	return false
}

type chunk struct {
	data  [64]byte
	n     int
	flags uint32
	ts    unix.Timeval
	final bool // the last chunk of a frame
}

func newFake(mplane bool) *fakeEncoder {
	return &fakeEncoder{
		mplane: mplane,
		coded:  []capture.PixelFormat{capture.FormatH264},
		raws:   []capture.PixelFormat{capture.FormatNV12, capture.FormatYU12, capture.FormatYUYV},
		ctrls: map[uint32]bool{
			cidBitrate: true, cidGOPSize: true, cidH264IPeriod: true, cidRepeatSeqHeader: true, cidForceKeyFrame: true,
		},
		keyFlag:    true,
		outTS:      map[int]unix.Timeval{},
		outUsed:    map[int]uint32{},
		ctrlValues: map[uint32]int32{},
	}
}

func (f *fakeEncoder) capType() uint32 {
	if f.mplane {
		return bufTypeCaptureMPlane
	}
	return bufTypeCapture
}

func (f *fakeEncoder) outType() uint32 {
	if f.mplane {
		return bufTypeOutputMPlane
	}
	return bufTypeOutput
}

func (f *fakeEncoder) ioctl(req uintptr, arg unsafe.Pointer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return unix.EBADF
	}
	if f.gone {
		return unix.ENODEV
	}
	ne := binary.NativeEndian
	switch req {
	case vidiocQuerycap:
		if f.noQueryCap {
			return unix.ENOTTY
		}
		c := (*v4l2Capability)(arg)
		copy(c.Driver[:], "fakecodec")
		copy(c.Card[:], "fake encoder")
		c.Capabilities = capDeviceCaps | capStreaming | capVideoM2M | capVideoM2MMPlane
		c.DeviceCaps = capStreaming | capVideoM2M
		if f.mplane {
			c.DeviceCaps = capStreaming | capVideoM2MMPlane
		}
		if f.notM2M {
			c.DeviceCaps = capStreaming | 1 // V4L2_CAP_VIDEO_CAPTURE
		}
	case vidiocEnumFmt:
		d := (*v4l2FmtDesc)(arg)
		var list []capture.PixelFormat
		switch d.Type {
		case f.capType():
			list = f.coded
			d.Flags = fmtFlagCompressed
		case f.outType():
			list = f.raws
		default:
			return unix.EINVAL
		}
		if int(d.Index) >= len(list) {
			return unix.EINVAL
		}
		d.PixelFormat = uint32(list[d.Index])
	case vidiocSFmt, vidiocGFmt:
		fm := (*v4l2Format)(arg)
		raw := fm.Fmt.Raw[:]
		set := req == vidiocSFmt
		switch fm.Type {
		case f.capType():
			if set {
				p := capture.PixelFormat(ne.Uint32(raw[8:]))
				if !slices.Contains(f.coded, p) {
					p = f.coded[0]
				}
				f.codec = uint32(p)
			}
			ne.PutUint32(raw[0:], f.width)
			ne.PutUint32(raw[4:], f.height)
			ne.PutUint32(raw[8:], f.codec)
			f.codedSize = max(f.width*f.height/2, 4096)
			f.putPlane(raw, 0, f.codedSize)
		case f.outType():
			if set {
				p := capture.PixelFormat(ne.Uint32(raw[8:]))
				if !slices.Contains(f.raws, p) {
					p = f.raws[0] // drivers substitute a format they have
				}
				f.rawFmt = uint32(p)
				f.width, f.height = ne.Uint32(raw[0:]), ne.Uint32(raw[4:])
				ah := f.height + uint32(f.padHeight)
				switch p {
				case capture.FormatYUYV:
					f.stride = 2*f.width + uint32(f.padStride)
					f.size = f.stride * ah
				default:
					f.stride = f.width + uint32(f.padStride)
					f.size = f.stride * ah * 3 / 2
				}
			}
			ne.PutUint32(raw[0:], f.width)
			ne.PutUint32(raw[4:], f.height+uint32(f.padHeight))
			ne.PutUint32(raw[8:], f.rawFmt)
			f.putPlane(raw, f.stride, f.size)
		default:
			return unix.EINVAL
		}
	case vidiocSParm:
		if f.rateRefused {
			return unix.ENOTTY
		}
		p := (*v4l2StreamParm)(arg)
		if p.Type != f.outType() {
			return unix.EINVAL
		}
		f.rateSet = [2]uint32{ne.Uint32(p.Parm[8:]), ne.Uint32(p.Parm[12:])}
	case vidiocQueryctrl:
		q := (*v4l2QueryCtrl)(arg)
		if !f.ctrls[q.ID] {
			return unix.EINVAL
		}
	case vidiocSCtrl:
		c := (*v4l2Control)(arg)
		if !f.ctrls[c.ID] {
			return unix.EINVAL
		}
		f.ctrlValues[c.ID] = c.Value
		if c.ID == cidForceKeyFrame {
			f.forceKey = true
		}
	case vidiocReqbufs:
		rb := (*v4l2RequestBuffers)(arg)
		bufs := &f.out
		size := f.size
		if rb.Type == f.capType() {
			bufs, size = &f.cap, f.codedSize
		} else if rb.Type != f.outType() {
			return unix.EINVAL
		}
		*bufs = nil
		for range rb.Count {
			*bufs = append(*bufs, make([]byte, size))
		}
	case vidiocQuerybuf:
		b := (*v4l2Buffer)(arg)
		bufs, base := f.out, 0
		if b.Type == f.capType() {
			bufs, base = f.cap, 1<<20
		}
		if int(b.Index) >= len(bufs) {
			return unix.EINVAL
		}
		off, n := uint32(base+int(b.Index)), uint32(len(bufs[b.Index]))
		if f.mplane {
			p := planeOf(b)
			*(*uint32)(unsafe.Pointer(&p.M)) = off
			p.Length = n
		} else {
			*(*uint32)(unsafe.Pointer(&b.M)) = off
			b.Length = n
		}
	case vidiocQbuf:
		b := (*v4l2Buffer)(arg)
		if f.mplane && (b.Length != 1 || b.M == 0) {
			return unix.EINVAL
		}
		switch b.Type {
		case f.outType():
			if int(b.Index) >= len(f.out) || contains(&f.outQ, int(b.Index)) {
				return unix.EINVAL
			}
			used := b.BytesUsed
			if f.mplane {
				used = planeOf(b).BytesUsed
			}
			f.outUsed[int(b.Index)] = used
			f.outTS[int(b.Index)] = b.Timestamp
			f.outQ.push(int(b.Index))
		case f.capType():
			if int(b.Index) >= len(f.cap) || contains(&f.capQ, int(b.Index)) {
				return unix.EINVAL
			}
			f.capQ.push(int(b.Index))
			f.queuedCaptures++
		default:
			return unix.EINVAL
		}
		f.run()
	case vidiocDqbuf:
		b := (*v4l2Buffer)(arg)
		switch b.Type {
		case f.outType():
			if f.outDone.len() == 0 {
				return unix.EAGAIN
			}
			b.Index = uint32(f.outDone.pop())
		case f.capType():
			if !f.streaming[1] {
				return unix.EINVAL
			}
			if f.capDone.len() == 0 {
				if f.lastDequeued {
					return unix.EPIPE
				}
				return unix.EAGAIN
			}
			d := f.capDone.pop()
			b.Index, b.Flags, b.Timestamp = uint32(d.idx), d.flags, d.ts
			if f.mplane {
				planeOf(b).BytesUsed = d.used
			} else {
				b.BytesUsed = d.used
			}
			if d.flags&bufFlagLast != 0 {
				f.lastDequeued = true
			}
		default:
			return unix.EINVAL
		}
	case vidiocStreamon, vidiocStreamoff:
		t := *(*int32)(arg)
		i := 0
		if uint32(t) == f.capType() {
			i = 1
		} else if uint32(t) != f.outType() {
			return unix.EINVAL
		}
		f.streaming[i] = req == vidiocStreamon
		if req == vidiocStreamon {
			f.run()
		}
	case vidiocSSelection:
		sel := (*v4l2Selection)(arg)
		if sel.Type != bufTypeOutput || sel.Target != selTgtCrop {
			return unix.EINVAL
		}
		f.crop = [2]uint32{sel.Width, sel.Height}
	case vidiocEncoderCmd:
		c := (*v4l2EncoderCmd)(arg)
		if c.Cmd != encCmdStop {
			return unix.EINVAL
		}
		f.encoderCmds++
		f.draining = true
		f.run()
	default:
		return unix.ENOTTY
	}
	return nil
}

// putPlane writes bytesperline and sizeimage into a format.
func (f *fakeEncoder) putPlane(raw []byte, stride, size uint32) {
	ne := binary.NativeEndian
	if f.mplane {
		ne.PutUint32(raw[mplanePlane0SizeOff:], size)
		ne.PutUint32(raw[mplanePlane0StrideOf:], stride)
		raw[mplaneNumPlanesOff] = 1
		return
	}
	ne.PutUint32(raw[16:], stride)
	ne.PutUint32(raw[20:], size)
}

// run encodes the queued OUTPUT buffers while a CAPTURE buffer can take
// the result (as a driver's job_ready does), and fills queued CAPTURE
// buffers with the coded chunks.
func (f *fakeEncoder) run() {
	if !f.streaming[0] || !f.streaming[1] {
		return
	}
	for f.outQ.len() > 0 && f.capQ.len() > f.chunks.len() {
		i := f.outQ.pop()
		f.encode(i)
		f.outDone.push(i)
		f.frames++
		if f.goneAt > 0 && f.frames >= f.goneAt {
			f.gone = true
			return
		}
	}
	for f.chunks.len() > 0 && f.capQ.len() > 0 {
		c := f.chunks.at(0)
		idx := f.capQ.pop()
		n := copy(f.cap[idx], c.data[:c.n])
		flags := c.flags
		if f.draining && c.final && f.chunks.len() == 1 && f.outQ.len() == 0 {
			flags |= bufFlagLast
		}
		f.capDone.push(fbuf{idx: idx, used: uint32(n), flags: flags, ts: c.ts})
		f.chunks.pop()
	}
	// Draining with nothing left: the next CAPTURE buffer is an empty LAST.
	if f.draining && f.chunks.len() == 0 && f.outQ.len() == 0 && !f.lastSent() && f.capQ.len() > 0 {
		f.capDone.push(fbuf{idx: f.capQ.pop(), flags: bufFlagLast})
	}
}

func (f *fakeEncoder) lastSent() bool {
	if f.lastDequeued {
		return true
	}
	for i := range f.capDone.len() {
		if f.capDone.at(i).flags&bufFlagLast != 0 {
			return true
		}
	}
	return false
}

// planeOf is the plane a multi-planar buffer's m.planes points to.
func planeOf(b *v4l2Buffer) *v4l2Plane {
	return (*v4l2Plane)(*(*unsafe.Pointer)(unsafe.Pointer(&b.M)))
}

// The fake's coded frames: parameter sets, IDR and non-IDR slices.
var (
	fakeSPSPPS = []byte{0, 0, 0, 1, 0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce}
	fakeIDR    = []byte{0, 0, 0, 1, 0x65, 0x88}
	fakeP      = []byte{0, 0, 0, 1, 0x41, 0x9a}
)

// encode turns OUTPUT buffer i into coded chunks: each picture ends with
// the byte sum of the raw payload and the frame number.
func (f *fakeEncoder) encode(i int) {
	n := f.frames
	key := n == 0 || f.forceKey || (f.gop > 0 && n%f.gop == 0)
	f.forceKey = false
	payload := f.out[i][:f.outUsed[i]]
	if f.keepRaw {
		f.raw = append(f.raw, slices.Clone(payload))
	}
	ts := f.outTS[i]
	if f.badStamp {
		ts = unix.NsecToTimeval(987654321000)
	}
	var flags uint32
	if key && f.keyFlag {
		flags |= bufFlagKeyframe
	}
	if f.errorAt[n] {
		flags |= bufFlagError
	}
	var sum byte
	if !f.noSum {
		for _, b := range payload {
			sum += b
		}
	}
	c := chunk{flags: flags, ts: ts, final: true}
	if capture.PixelFormat(f.codec) == FormatFWHT {
		c.n = copy(c.data[:], []byte{0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff})
		if key {
			binary.BigEndian.PutUint32(c.data[20:], fwhtFlagIFrame)
		}
		c.data[fwhtHeaderSize], c.data[fwhtHeaderSize+1] = sum, byte(n)
		c.n = fwhtHeaderSize + 2
		c.flags &^= bufFlagKeyframe // vicodec does not flag its I frames
		f.chunks.push(c)
		return
	}
	if key {
		if f.separatePS {
			ps := chunk{ts: ts}
			ps.n = copy(ps.data[:], fakeSPSPPS)
			f.chunks.push(ps)
		} else {
			c.n = copy(c.data[:], fakeSPSPPS)
		}
		c.n += copy(c.data[c.n:], fakeIDR)
	} else {
		c.n += copy(c.data[c.n:], fakeP)
	}
	c.data[c.n], c.data[c.n+1] = sum, byte(n)
	c.n += 2
	f.chunks.push(c)
}

func (f *fakeEncoder) mmap(offset int64, length int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	bufs := f.out
	if offset >= 1<<20 {
		bufs, offset = f.cap, offset-1<<20
	}
	if int(offset) >= len(bufs) || len(bufs[offset]) != length {
		return nil, unix.EINVAL
	}
	return bufs[offset], nil
}

func (f *fakeEncoder) munmap([]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unmapped++
	return nil
}

// poll reports what is ready; with nothing ready it waits a millisecond
// (the encoder's loop, not the test, depends on that) and reports nothing.
func (f *fakeEncoder) poll(events int16, timeout time.Duration) (int16, error) {
	f.mu.Lock()
	var r int16
	switch {
	case f.closed:
		r = unix.POLLNVAL
	case f.gone:
		r = unix.POLLERR | unix.POLLHUP
	default:
		if events&unix.POLLIN != 0 && (f.capDone.len() > 0 || f.lastDequeued) {
			r |= unix.POLLIN
		}
		if events&unix.POLLOUT != 0 && f.outDone.len() > 0 {
			r |= unix.POLLOUT
		}
	}
	f.mu.Unlock()
	if r == 0 {
		time.Sleep(min(timeout, time.Millisecond))
	}
	return r, nil
}

func (f *fakeEncoder) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// unplug makes the device disappear.
func (f *fakeEncoder) unplug() {
	f.mu.Lock()
	f.gone = true
	f.mu.Unlock()
}
