package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
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

func TestDispatch(t *testing.T) {
	run := func(name string) func([]string, io.Writer, io.Writer) int {
		return func(args []string, stdout, _ io.Writer) int {
			fmt.Fprintf(stdout, "%s %q", name, args)
			return 7
		}
	}
	cmds := []Command{{Name: "serve", Run: run("serve")}, {Name: "go", Run: run("go")}}
	elsewhere := func(name string, args []string) string {
		if name == "far" {
			return fmt.Sprintf("far is elsewhere: other %s", strings.Join(args, " "))
		}
		return ""
	}
	noDefault := &Program{Name: "prog", Version: "v1", Usage: "usage: prog\n", Commands: cmds, Help: []string{"help", "-h"}, Elsewhere: elsewhere}
	withDefault := &Program{Name: "recv", Version: "v2", Usage: "usage: recv\n", Commands: cmds, Default: "serve", Help: []string{"help"}}
	for _, c := range []struct {
		p        *Program
		args     []string
		code     int
		out, err string
	}{
		{noDefault, nil, 2, "", "usage: prog\n"},
		{noDefault, []string{"go", "-x", "a"}, 7, `go ["-x" "a"]`, ""},
		{noDefault, []string{"version"}, 0, "prog v1\n", ""},
		{noDefault, []string{"--version"}, 0, "prog v1\n", ""},
		{noDefault, []string{"-h"}, 0, "usage: prog\n", ""},
		{noDefault, []string{"-help"}, 2, "", "prog: unknown command \"-help\"\n\nusage: prog\n"},
		{noDefault, []string{"far", "a", "b"}, 2, "", "prog: far is elsewhere: other a b\n"},
		{noDefault, []string{"near"}, 2, "", "prog: unknown command \"near\"\n\nusage: prog\n"},
		{noDefault, []string{""}, 2, "", "prog: unknown command \"\"\n\nusage: prog\n"},
		{withDefault, nil, 7, `serve []`, ""},
		{withDefault, []string{"-data", "d"}, 7, `serve ["-data" "d"]`, ""},
		{withDefault, []string{"-h"}, 7, `serve ["-h"]`, ""},
		{withDefault, []string{"-version"}, 0, "recv v2\n", ""},
		{withDefault, []string{"help"}, 0, "usage: recv\n", ""},
		{withDefault, []string{"go"}, 7, `go []`, ""},
		{withDefault, []string{"far"}, 2, "", "recv: unknown command \"far\"\n\nusage: recv\n"},
	} {
		var out, errb bytes.Buffer
		code := c.p.Dispatch(c.args, &out, &errb)
		if code != c.code || out.String() != c.out || errb.String() != c.err {
			t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want %d, %q, %q", c.p.Name, c.args, code, out.String(), errb.String(), c.code, c.out, c.err)
		}
	}
}
