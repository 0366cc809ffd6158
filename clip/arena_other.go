//go:build !linux

package clip

// newArena returns the ring's arena: an ordinary slice where keyframe does
// not map memory itself (it runs on Linux; this is for development).
func newArena(_ *Ring, n int) []byte { return make([]byte, n) }
