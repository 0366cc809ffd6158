package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/receiver"
)

// limitValue is a flag for a receiver limit: a positive count, or with
// bytes a size with an optional binary suffix (KiB, MiB, GiB), or "off" for
// no limit (stored as -1, the receiver's "no limit").
type limitValue struct {
	n     int64
	bytes bool
}

func (v *limitValue) String() string {
	switch {
	case v == nil:
		return ""
	case v.n < 0:
		return "off"
	case v.bytes:
		return formatBytes(v.n)
	}
	return strconv.FormatInt(v.n, 10)
}

func (v *limitValue) Set(s string) error {
	if s == "off" {
		v.n = -1
		return nil
	}
	num, mult := s, int64(1)
	if v.bytes {
		for _, u := range []struct {
			suffix string
			mult   int64
		}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
			if rest, ok := strings.CutSuffix(s, u.suffix); ok {
				num, mult = rest, u.mult
				break
			}
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		if v.bytes {
			return errors.New("want a positive number of bytes (optionally with KiB, MiB or GiB), or off")
		}
		return errors.New("want a positive number, or off")
	}
	v.n = n * mult
	return nil
}

// formatBytes writes n in the largest binary unit that divides it.
func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// receiverLimits are the flags of the receiver's limits (issue 13): each
// defaults to the receiver's own default.
type receiverLimits struct {
	maxInFlight, maxConns, maxConnsPerAddr, uploadsPerAddr limitValue
	minUploadRate, bodyBudget, bodyBudgetPerAddr           limitValue
	uploadGrace                                            time.Duration
	recordsHour, recordsDay, bytesHour, bytesDay           limitValue
}

// addFlags defines the limit flags on fs.
func (l *receiverLimits) addFlags(fs *flag.FlagSet) {
	l.maxInFlight = limitValue{n: receiver.DefaultMaxInFlight}
	l.maxConns = limitValue{n: receiver.DefaultMaxConns}
	l.maxConnsPerAddr = limitValue{n: receiver.DefaultMaxConnsPerAddr}
	l.uploadsPerAddr = limitValue{n: receiver.DefaultUploadsPerAddr}
	l.minUploadRate = limitValue{n: receiver.DefaultMinUploadRate, bytes: true}
	l.bodyBudget = limitValue{n: receiver.DefaultBodyBudget, bytes: true}
	l.bodyBudgetPerAddr = limitValue{bytes: true}
	l.recordsHour = limitValue{n: receiver.DefaultRecordsPerHour}
	l.recordsDay = limitValue{n: receiver.DefaultRecordsPerDay}
	l.bytesHour = limitValue{n: receiver.DefaultBytesPerHour, bytes: true}
	l.bytesDay = limitValue{n: receiver.DefaultBytesPerDay, bytes: true}
	fs.Var(&l.maxInFlight, "max-in-flight", "uploads verified and stored at once (after their body is read); more get 503 with Retry-After")
	fs.Var(&l.maxConns, "max-conns", "connections open at once; one over it is closed at once (or off)")
	fs.Var(&l.maxConnsPerAddr, "max-conns-per-addr", "connections open at once from one source address (an IPv6 /64); raise it behind a proxy (or off)")
	fs.Var(&l.uploadsPerAddr, "uploads-per-addr", "upload requests of one source address a minute, more get 429 with Retry-After; raise it behind a proxy (or off)")
	fs.Var(&l.minUploadRate, "min-upload-rate", "after -upload-grace, an upload body must average at least this many bytes a second, or it is cut with 408 (or off)")
	fs.DurationVar(&l.uploadGrace, "upload-grace", receiver.DefaultUploadGrace, "time an upload body has before -min-upload-rate applies")
	fs.Var(&l.bodyBudget, "body-budget", "upload body bytes held in memory at once, over all uploads; one that does not fit gets 503 with Retry-After (at least -max-body, or off)")
	fs.Var(&l.bodyBudgetPerAddr, "body-budget-per-addr", "the part of -body-budget one source address may hold (default a quarter of it, at least -max-body; raise it behind a proxy, or off)")
	fs.Var(&l.recordsHour, "quota-records-hour", "new records one device may store an hour; more get 429 with Retry-After (or off)")
	fs.Var(&l.recordsDay, "quota-records-day", "new records one device may store a day (or off)")
	fs.Var(&l.bytesHour, "quota-bytes-hour", "bytes (envelopes and media) one device may store an hour (at least -max-body, or off)")
	fs.Var(&l.bytesDay, "quota-bytes-day", "bytes one device may store a day (at least -max-body, or off)")
}

// apply sets cfg's limits from the flags, or returns an error naming the
// bad flag.
func (l *receiverLimits) apply(cfg *receiver.ServeConfig) error {
	if l.uploadGrace <= 0 {
		return fmt.Errorf("-upload-grace %s: want a positive duration", l.uploadGrace)
	}
	maxBody := cfg.MaxBody
	for _, c := range []struct {
		name string
		v    limitValue
	}{{"-body-budget", l.bodyBudget}, {"-body-budget-per-addr", l.bodyBudgetPerAddr}, {"-quota-bytes-hour", l.bytesHour}, {"-quota-bytes-day", l.bytesDay}} {
		if c.v.n > 0 && c.v.n < maxBody {
			return fmt.Errorf("%s %s is below -max-body %d: an upload that large could never be taken", c.name, c.v.String(), maxBody)
		}
	}
	if l.maxInFlight.n < 0 {
		return errors.New("-max-in-flight: off is not allowed (uploads verified at once need a bound)")
	}
	cfg.MaxInFlight = int(l.maxInFlight.n)
	cfg.MaxConns = int(l.maxConns.n)
	cfg.MaxConnsPerAddr = int(l.maxConnsPerAddr.n)
	cfg.UploadsPerAddr = int(l.uploadsPerAddr.n)
	cfg.MinUploadRate = l.minUploadRate.n
	cfg.UploadGrace = l.uploadGrace
	cfg.BodyBudget = l.bodyBudget.n
	cfg.BodyBudgetPerAddr = l.bodyBudgetPerAddr.n
	cfg.Quota = receiver.Quota{
		RecordsPerHour: int(min(l.recordsHour.n, 1<<31-1)), RecordsPerDay: int(min(l.recordsDay.n, 1<<31-1)),
		BytesPerHour: l.bytesHour.n, BytesPerDay: l.bytesDay.n,
	}
	return nil
}
