// Package clip keeps the pre-roll of event clips: the last few seconds of
// encoded frames in a bounded memory [Ring], fed from the capture loop by a
// [Feeder] that never holds the loop up.
//
// The ring is a byte arena and a frame index, both allocated once
// ([Config.MaxBytes], [Config.MaxFrames]); [Ring.Push] copies a JPEG in with
// its capture time, the driver's sequence number and its [Origin], evicting
// the oldest frames as needed, and allocates nothing. A [Cursor] reads the
// frames from a time on (the trigger minus [Config.PreRoll]) and then keeps
// reading the frames pushed after it, each copied out into the caller's
// buffer; a cursor that falls behind is told how many frames were evicted
// before it read them, never skipped silently.
//
// The feeder takes frames at [Config.Rate], decimating by capture time. An
// MJPEG camera's frames go into the ring byte for byte as capture delivered
// them ([Camera]); a raw frame (YUYV, NV12, YU12, GREY, RGB24) is copied for
// one encoder goroutine through a one-slot handoff and JPEG-encoded at
// [Config.Quality] ([Encoded]); when the encoder is still busy with the
// previous frame and one is already waiting, the frame is dropped and
// counted, never queued. [Feeder.Offer], on the capture loop, allocates
// nothing: it costs about one copy of the frame (a raw frame handed off),
// less for an MJPEG frame (its JPEG's bytes into the ring) and nothing
// measurable for a frame skipped by the rate or dropped. Encoding allocates
// what image/jpeg does per image (5 objects for a colour frame, 1–20 KB
// measured at 640x480); its image planes and output buffer are reused.
//
// H.264 clips ([CodecH264]): the feeder gives raw frames to an [Encoder]
// (an [ExecEncoder] runs a command such as ffmpeg with libx264) and pushes
// its access units, matched in order to the frames they encode; the ring
// then holds whole groups of pictures (see [Ring.Push] and [Ring.Cursor]),
// so a clip starts at a key frame at or before its pre-roll.
//
// The agent (agent/clips.go) reads the ring into signed segment records;
// docs/clips.md has the measured figures and the memory the defaults take.
package clip
