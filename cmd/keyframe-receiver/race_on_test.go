//go:build race

package main

// raceEnabled: the tests run under the race detector, whose shadow memory
// makes a process's resident size no measure of the code's.
const raceEnabled = true
