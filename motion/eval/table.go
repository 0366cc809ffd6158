package eval

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteTable writes r for people: a row per sequence in run order, the
// overall row (means over the sequences with positive frames), the events
// raised on the sequences without positives, and the skipped directories.
// Undefined metrics print as "-".
func WriteTable(w io.Writer, r Report) error {
	rows := [][]string{{"sequence", "P", "R", "F1", "evP", "evR", "false/1k", "frames", "pos", "neg", "flagged", "events", "false", "tail s", "best!", "ms/frame"}}
	for _, name := range r.Names {
		s := r.Sequences[name]
		rows = append(rows, []string{
			name, num(s.Precision, 2), num(s.Recall, 2), num(s.F1, 2),
			num(s.EventPrecision, 2), num(s.EventRecall, 2), num(s.FalseEventsPer1000Quiet, 1),
			strconv.Itoa(s.Frames), strconv.Itoa(s.Positives), strconv.Itoa(s.Negatives),
			percent(s.Flagged, s.Frames), strconv.Itoa(s.Events), strconv.Itoa(s.FalseEvents),
			tails(s.TailMeanSeconds, s.TailMaxSeconds), strconv.Itoa(s.BestWithoutMotion),
			fmt.Sprintf("%.3f", s.MsPerFrame),
		})
	}
	o := r.Overall
	rows = append(rows, []string{
		fmt.Sprintf("overall (mean of %d)", o.ScoredSequences), num(o.Precision, 2), num(o.Recall, 2), num(o.F1, 2),
		num(o.EventPrecision, 2), num(o.EventRecall, 2), num(o.FalseEventsPer1000Quiet, 1),
		"", "", "", "", "", "", tails(o.TailMeanSeconds, o.TailMaxSeconds), fmt.Sprintf("%d/%d", o.BestWithoutMotion, o.TrueEvents),
	})
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len(c))
		}
	}
	var b strings.Builder
	for n, row := range rows {
		if n == len(rows)-1 {
			b.WriteString(strings.Repeat("-", widths[0]) + "\n")
		}
		for i, c := range row {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", widths[0], c)
			} else {
				fmt.Fprintf(&b, "  %*s", widths[i], c)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "events on the %d sequences without positives (all false alarms): %d\n", o.QuietSequences, o.EventsOnQuietSequences)
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "skipped %s: %s\n", s.Dir, s.Reason)
	}
	b.WriteString("P, R, F1: frames labelled 1 or 0. evP, evR: event precision and recall (ground-truth\n" +
		"events: positive frames merged across short gaps). false/1k: events overlapping no\n" +
		"ground-truth event per 1000 label-0 frames; false: their count. flagged: frames with\n" +
		"motion. tail s: mean/max seconds from the last labelled motion frame an event was\n" +
		"open on to the frame that closed it. best!: events on labelled motion whose best\n" +
		"frame is not labelled motion. overall: mean over the sequences with positive frames\n" +
		"(tails pooled over all events, best! summed). The first frame of each sequence is\n" +
		"not scored (nothing before it to compare with).\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	return nil
}

// tails prints a mean/max pair of seconds.
func tails(mean, most *float64) string {
	if mean == nil || most == nil {
		return "-"
	}
	return num(mean, 1) + "/" + num(most, 1)
}

func num(v *float64, digits int) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', digits, 64)
}

func percent(n, of int) string {
	if of == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 0, 64) + "%"
}
