package mp4

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"os"
	"os/exec"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/h264"
	"github.com/keyframe-cam/keyframe/internal/h264/h264test"
)

// BenchmarkClipBytes measures what a second of clip costs as H.264 in MP4
// (libx264 at a camera-like setting: -preset veryfast -tune zerolatency
// -g 30, at 1 Mbit/s and at its default quality, CRF 23, muxed by this
// package with a fragment every 2 s, as clip.mp4 is) against Motion JPEG
// at clip.quality 75 (Go's image/jpeg, as the agent encodes clip frames),
// from the same frames: ffmpeg's testsrc2 at 640×480, 10 frames a second,
// 30 s; and a real video when KEYFRAME_CLIP_VIDEO names one (e.g. the
// shared motion data's opencv_vtest/vtest.avi: 768×576, 10 fps, people in
// a plaza; set it for one run, not exported):
//
//	KEYFRAME_CLIP_VIDEO=../shared/motion-data/opencv_vtest/vtest.avi go test ./internal/mp4 -run - -bench ClipBytes -benchtime 1x
//
// It reports bytes a second of each (h264-1M-B/s, h264-crf23-B/s,
// mjpeg-q75-B/s) and logs the ratio.
func BenchmarkClipBytes(b *testing.B) {
	type source struct {
		name  string
		input []string // ffmpeg's input options
		rate  int
	}
	srcs := []source{{"testsrc2-640x480", []string{"-f", "lavfi", "-i", "testsrc2=size=640x480:rate=10", "-frames:v", "300"}, 10}}
	if v := os.Getenv("KEYFRAME_CLIP_VIDEO"); v != "" {
		srcs = append(srcs, source{"video", []string{"-i", v, "-r", "10"}, 10})
	}
	for _, src := range srcs {
		b.Run(src.name, func(b *testing.B) {
			ff := h264test.Tool(b, "ffmpeg")
			run := func(args ...string) []byte {
				var out, stderr bytes.Buffer
				cmd := exec.Command(ff, append(append([]string{"-hide_banner", "-loglevel", "error"}, src.input...), args...)...)
				cmd.Stdout, cmd.Stderr = &out, &stderr
				if err := cmd.Run(); err != nil {
					b.Fatalf("ffmpeg: %v: %s", err, stderr.String())
				}
				return out.Bytes()
			}
			for range b.N {
				// The frames as the camera has them (YUV 4:2:0), to JPEG.
				w, h := frameSize(b, ff, src.input)
				raw := run("-f", "rawvideo", "-pix_fmt", "yuv420p", "-")
				fsize := w*h + 2*((w+1)/2)*((h+1)/2)
				frames := len(raw) / fsize
				var mjpeg int
				for i := range frames {
					f := raw[i*fsize : (i+1)*fsize]
					img := &image.YCbCr{Y: f[:w*h], Cb: f[w*h : w*h+fsize/6], Cr: f[w*h+fsize/6:], YStride: w, CStride: (w + 1) / 2,
						SubsampleRatio: image.YCbCrSubsampleRatio420, Rect: image.Rect(0, 0, w, h)}
					var jb bytes.Buffer
					if err := jpeg.Encode(&jb, img, &jpeg.Options{Quality: 75}); err != nil {
						b.Fatal(err)
					}
					mjpeg += jb.Len()
				}
				secs := float64(frames) / float64(src.rate)
				x264 := []string{"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p", "-x264-params", "repeat-headers=1"}
				mp4At := func(rc ...string) (int, int) {
					stream := run(append(append(append([]string(nil), x264...), rc...), "-f", "h264", "-")...)
					n, size := muxedSize(b, stream, src.rate)
					return n, size
				}
				n1, abr := mp4At("-b:v", "1M")
				n2, crf := mp4At("-crf", "23")
				if n1 != frames || n2 != frames {
					b.Fatalf("%d and %d H.264 frames of %d", n1, n2, frames)
				}
				b.ReportMetric(float64(abr)/secs, "h264-1M-B/s")
				b.ReportMetric(float64(crf)/secs, "h264-crf23-B/s")
				b.ReportMetric(float64(mjpeg)/secs, "mjpeg-q75-B/s")
				b.Logf("%s %dx%d, %d frames at %d fps: MJPEG q75 %s/s; H.264 MP4 1 Mbit/s %s/s (%.1fx smaller), CRF 23 %s/s (%.1fx smaller)",
					src.name, w, h, frames, src.rate, kb(float64(mjpeg)/secs), kb(float64(abr)/secs), float64(mjpeg)/float64(abr), kb(float64(crf)/secs), float64(mjpeg)/float64(crf))
			}
		})
	}
}

func kb(v float64) string { return fmt.Sprintf("%.1f KB", v/1000) }

// frameSize asks ffprobe for the input's first video stream's size.
func frameSize(b *testing.B, ff string, input []string) (int, int) {
	var out, stderr bytes.Buffer
	cmd := exec.Command(ff, append(append([]string{"-hide_banner", "-loglevel", "error"}, input...), "-frames:v", "1", "-f", "h264", "-c:v", "libx264", "-")...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("ffmpeg: %v: %s", err, stderr.String())
	}
	sps, _, err := h264.ParamSets(out.Bytes())
	if err != nil || sps == nil {
		b.Fatalf("no SPS: %v", err)
	}
	s, err := h264.ParseSPS(sps)
	if err != nil {
		b.Fatal(err)
	}
	return s.Width, s.Height
}

// muxedSize writes a stream as this package's fragmented MP4, a fragment
// every 2 s: its frames and bytes.
func muxedSize(b *testing.B, stream []byte, rate int) (int, int) {
	aus, err := h264.SplitAccessUnits(stream)
	if err != nil {
		b.Fatal(err)
	}
	sps, pps, err := h264.ParamSets(aus[0])
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	w, err := NewWriter(&out, Track{SPS: sps, PPS: pps})
	if err != nil {
		b.Fatal(err)
	}
	per := 2 * rate
	for f := 0; f < len(aus); f += per {
		var samples []Sample
		for i := f; i < min(f+per, len(aus)); i++ {
			d, key, _, _, err := AppendSample(nil, aus[i])
			if err != nil {
				b.Fatal(err)
			}
			samples = append(samples, Sample{Duration: uint32(Timescale / rate), Key: key, Data: d})
		}
		if err := w.WriteFragment(uint64(f*Timescale/rate), samples); err != nil {
			b.Fatal(err)
		}
	}
	return len(aus), out.Len()
}
