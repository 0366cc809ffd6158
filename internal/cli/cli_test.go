package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const usage = "usage: prog sub [-n N]\n       prog sub other\n"
	newFS := func() (*flag.FlagSet, *int) {
		fs := flag.NewFlagSet("prog sub", flag.ContinueOnError)
		return fs, fs.Int("n", 3, "how many")
	}
	fs, n := newFS()
	var out, errb bytes.Buffer
	if code, ok := Parse(fs, []string{"-n", "5", "x"}, usage, &out, &errb); !ok || code != 0 || *n != 5 || fs.Arg(0) != "x" || out.Len()+errb.Len() != 0 {
		t.Errorf("good flags: %d %v n=%d out %q err %q", code, ok, *n, out.String(), errb.String())
	}
	fs, _ = newFS()
	if code, ok := Parse(fs, []string{"-h"}, usage, &out, &errb); ok || code != 0 || !strings.Contains(out.String(), "prog sub other") || !strings.Contains(out.String(), "-n int") || errb.Len() != 0 {
		t.Errorf("-h: %d %v out %q err %q", code, ok, out.String(), errb.String())
	}
	out.Reset()
	fs, _ = newFS()
	if code, ok := Parse(fs, []string{"-m"}, usage, &out, &errb); ok || code != 2 || !strings.Contains(errb.String(), "-m") || !strings.Contains(errb.String(), "prog sub -h") || out.Len() != 0 {
		t.Errorf("bad flag: %d %v out %q err %q", code, ok, out.String(), errb.String())
	}
}

func TestPrintError(t *testing.T) {
	var b bytes.Buffer
	PrintError(&b, "prog", errors.Join(errors.New("a: one"), errors.Join(errors.New("b: two"), errors.New("c: three"))))
	if got, want := b.String(), "prog: a: one\nprog: b: two\nprog: c: three\n"; got != want {
		t.Errorf("PrintError wrote %q, want %q", got, want)
	}
}
