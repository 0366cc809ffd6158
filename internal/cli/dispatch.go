package cli

import (
	"fmt"
	"io"
	"strings"
)

// Command is one subcommand of a Program: Run gets the arguments after its
// name and returns the exit code.
type Command struct {
	Name string
	Run  func(args []string, stdout, stderr io.Writer) int
}

// Program is a binary made of subcommands: keyframe, keyframe-receiver.
type Program struct {
	Name     string // as the user types it, and the prefix of its messages
	Version  string
	Usage    string // the synopsis, its commands listed
	Commands []Command
	// Default is the command run without one, or when the arguments start
	// with a flag (other than -version); "" makes both a mistake.
	Default string
	// Help are the names that print Usage on stdout and succeed.
	Help []string
	// Elsewhere says where a command that is not here is (a line for
	// stderr, without the program's name: the other binary, with the
	// command to type), or "" when it is unknown. It gets the command's
	// name and the arguments after it. Nil: every other name is unknown.
	Elsewhere func(name string, args []string) string
}

// Dispatch runs the command args[0] names and returns its exit code.
// "version" (or -version, --version) prints the program's name and version
// on stdout; a name of Help prints Usage on stdout. Without a command (and
// no Default) Usage goes to stderr; a command that is elsewhere or unknown
// is said on stderr (an unknown one with Usage). Each of those exits 2.
func (p *Program) Dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 && p.Default == "" {
		fmt.Fprint(stderr, p.Usage)
		return 2
	}
	name := p.Default
	if len(args) > 0 && (p.Default == "" || !strings.HasPrefix(args[0], "-") || isVersion(args[0])) {
		name, args = args[0], args[1:]
	}
	for _, c := range p.Commands {
		if c.Name == name {
			return c.Run(args, stdout, stderr)
		}
	}
	if isVersion(name) || name == "version" {
		fmt.Fprintf(stdout, "%s %s\n", p.Name, p.Version)
		return 0
	}
	for _, h := range p.Help {
		if h == name {
			fmt.Fprint(stdout, p.Usage)
			return 0
		}
	}
	if p.Elsewhere != nil {
		if where := p.Elsewhere(name, args); where != "" {
			fmt.Fprintf(stderr, "%s: %s\n", p.Name, where)
			return 2
		}
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", p.Name, name, p.Usage)
	return 2
}

// isVersion: -version is the version command, never a flag of Default.
func isVersion(a string) bool {
	return a == "-version" || a == "--version"
}
