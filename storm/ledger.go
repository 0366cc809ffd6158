package storm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// tally compares the records the devices created with the receiver's index.
type tally struct {
	Created    int // records created (signed and spooled)
	Stored     int // of those, present in the index
	Lost       int // created, not in the index
	Duplicates int // index lines beyond the first for one record (stored twice)
	Unexpected int // index lines for a record no device created
}

// indexRecord is the part of a receiver index line the ledger reads.
type indexRecord struct {
	Device string `json:"device"`
	Event  string `json:"event"`
	Kind   string `json:"kind"`
}

// tallyIndex reads a receiver's index.jsonl (one JSON object per line) and
// counts every created record in it: each must appear exactly once.
func tallyIndex(r io.Reader, created map[string]struct{}) (tally, error) {
	t := tally{Created: len(created)}
	seen := make(map[string]int, len(created))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var rec indexRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return t, fmt.Errorf("storm: index line %d: %w", n, err)
		}
		k := recordKey(rec.Device, rec.Event, rec.Kind)
		seen[k]++
		switch _, ok := created[k]; {
		case !ok:
			t.Unexpected++
		case seen[k] > 1:
			t.Duplicates++
		}
	}
	if err := sc.Err(); err != nil {
		return t, fmt.Errorf("storm: read index: %w", err)
	}
	for k := range created {
		if seen[k] > 0 {
			t.Stored++
		} else {
			t.Lost++
		}
	}
	return t, nil
}

// tallyIndexFile is tallyIndex on a file.
func tallyIndexFile(path string, created map[string]struct{}) (tally, error) {
	f, err := os.Open(path)
	if err != nil {
		return tally{}, fmt.Errorf("storm: %w", err)
	}
	defer f.Close()
	return tallyIndex(f, created)
}
