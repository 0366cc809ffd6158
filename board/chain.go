package board

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

// Chain is the device's signing chain state: the sequence number the next
// record gets, and the SHA-256 of the last envelope signed.
type Chain struct {
	Next uint64
	Prev []byte
}

type chainFile struct {
	Next uint64 `json:"next"`
	Prev string `json:"prev"`
}

// LoadChain reads the chain state at path. A missing file is a new device
// (Next 1, no Prev). A file that cannot be parsed is an error, never a silent
// restart at 1: that would reuse sequence numbers the receiver has seen.
func LoadChain(path string) (Chain, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Chain{Next: 1}, nil
	}
	if err != nil {
		return Chain{}, fmt.Errorf("board: read chain: %w", err)
	}
	var f chainFile
	if err := json.Unmarshal(b, &f); err != nil {
		return Chain{}, fmt.Errorf("board: chain %s is corrupt (%w); move it away only if you know the last sequence number used", path, err)
	}
	prev, err := hex.DecodeString(f.Prev)
	if err != nil || (len(prev) != 0 && len(prev) != 32) || f.Next == 0 {
		return Chain{}, fmt.Errorf("board: chain %s is corrupt (next=%d prev=%q)", path, f.Next, f.Prev)
	}
	return Chain{Next: f.Next, Prev: prev}, nil
}

// SaveChain writes the chain state atomically and durably. Call it before the
// record is spooled, so a sequence number is never reused after a crash.
func SaveChain(path string, c Chain) error {
	b, err := json.Marshal(chainFile{Next: c.Next, Prev: hex.EncodeToString(c.Prev)})
	if err != nil {
		return fmt.Errorf("board: encode chain: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("board: save chain: %w", err)
	}
	return nil
}
