package main

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/receiver"
)

// TestReceiverLimitFlags: every limit flag reaches the ServeConfig, "off"
// is the receiver's "no limit", sizes take binary suffixes, and the
// defaults are the receiver's.
func TestReceiverLimitFlags(t *testing.T) {
	parse := func(args ...string) (receiver.ServeConfig, error) {
		fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var l receiverLimits
		l.addFlags(fs)
		if err := fs.Parse(args); err != nil {
			return receiver.ServeConfig{}, err
		}
		cfg := receiver.ServeConfig{Options: receiver.Options{MaxBody: receiver.DefaultMaxBody}}
		return cfg, l.apply(&cfg)
	}
	cfg, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	want := receiver.Quota{RecordsPerHour: receiver.DefaultRecordsPerHour, RecordsPerDay: receiver.DefaultRecordsPerDay,
		BytesPerHour: receiver.DefaultBytesPerHour, BytesPerDay: receiver.DefaultBytesPerDay}
	if cfg.Quota != want || cfg.BodyBudget != receiver.DefaultBodyBudget || cfg.MaxConns != receiver.DefaultMaxConns ||
		cfg.UploadGrace != receiver.DefaultUploadGrace || cfg.BodyBudgetPerAddr != 0 {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = parse("-max-conns", "off", "-max-conns-per-addr", "64", "-uploads-per-addr", "1200", "-min-upload-rate", "16KiB",
		"-upload-grace", "20s", "-body-budget", "64MiB", "-body-budget-per-addr", "off", "-quota-records-hour", "100",
		"-quota-records-day", "off", "-quota-bytes-hour", "1GiB", "-quota-bytes-day", "4G", "-max-in-flight", "8")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != -1 || cfg.MaxConnsPerAddr != 64 || cfg.UploadsPerAddr != 1200 || cfg.MinUploadRate != 16<<10 ||
		cfg.UploadGrace != 20*time.Second || cfg.BodyBudget != 64<<20 || cfg.BodyBudgetPerAddr != -1 || cfg.MaxInFlight != 8 ||
		cfg.Quota != (receiver.Quota{RecordsPerHour: 100, RecordsPerDay: -1, BytesPerHour: 1 << 30, BytesPerDay: 4 << 30}) {
		t.Errorf("set: %+v", cfg)
	}
}

// TestReceiverLimitFlagErrors: a bad limit exits 2 with an error naming
// its flag, before anything is opened.
func TestReceiverLimitFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"-quota-records-hour", "0"}, "-quota-records-hour"},
		{[]string{"-quota-records-hour", "many"}, "-quota-records-hour"},
		{[]string{"-quota-bytes-day", "-5"}, "-quota-bytes-day"},
		{[]string{"-body-budget", "1MiB"}, "-body-budget"},
		{[]string{"-body-budget-per-addr", "12PiB"}, "-body-budget-per-addr"},
		{[]string{"-quota-bytes-hour", "1KiB"}, "-quota-bytes-hour"},
		{[]string{"-upload-grace", "0s"}, "-upload-grace"},
		{[]string{"-max-conns", "x"}, "-max-conns"},
		{[]string{"-max-in-flight", "off"}, "-max-in-flight"},
		{[]string{"-max-body", "0"}, "-max-body"},
	} {
		var stdout, stderr bytes.Buffer
		code := dispatch(append([]string{"-data", t.TempDir()}, c.args...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), c.flag) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %s", c.args, code, firstLine(stderr.String()), c.flag)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
