package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "video9")
	for _, tc := range []struct {
		args         []string
		code         int
		out, errWant string
	}{
		{[]string{"-frames", "1"}, 2, "", "usage: m2mprobe"},
		{[]string{"-format", "MJPG"}, 2, "", "-format \"MJPG\": want YU12, NV12 or YUYV"},
		{[]string{"-width", "0"}, 2, "", "usage: m2mprobe"},
		{[]string{"extra"}, 2, "", "usage: m2mprobe"},
		{[]string{"-in", missing, "-frames", "4"}, 1, "M2M: FAIL ", ""},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.errWant) {
			t.Errorf("m2mprobe %q: exit %d, stdout %q, stderr %q; want exit %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.errWant)
		}
		if tc.code == 1 && !strings.Contains(out.String(), "video9") {
			t.Errorf("m2mprobe %q: the failure does not name the device: %q", tc.args, out.String())
		}
	}
}

// -encoder auto with no encoder node: a FAIL naming the search, checked
// without a camera through pickEncoder.
func TestPickEncoderNone(t *testing.T) {
	p := probe{encoder: "auto", devDir: t.TempDir()}
	p.format = 0x32315559 // YU12
	_, _, err := p.pickEncoder()
	if err == nil || !strings.Contains(err.Error(), "no memory-to-memory encoder found") {
		t.Errorf("pickEncoder = %v", err)
	}
	p.encoder = filepath.Join(p.devDir, "video7")
	if _, _, err := p.pickEncoder(); err == nil || !strings.Contains(err.Error(), "video7: not a memory-to-memory node") {
		t.Errorf("pickEncoder(-encoder video7) = %v", err)
	}
}
