package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// Version is the build's version: set with -ldflags "-X
// github.com/splitpoint/splitpoint/config.Version=v1.2.3", else taken from
// the module build info.
var Version = ""

// VersionString returns the version line --version prints.
func VersionString(prog string) string {
	v := Version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("%s %s", prog, v)
}

// CLI is the part of a command line every binary shares: -c FILE,
// --version and -h.
type CLI struct {
	Flags   *flag.FlagSet
	Config  string
	version bool
}

// NewCLI starts a flag set for prog whose usage errors go to stderr.
func NewCLI(prog, usage string) *CLI {
	c := &CLI{Flags: flag.NewFlagSet(prog, flag.ContinueOnError)}
	c.Flags.StringVar(&c.Config, "c", "", "configuration `file` (TOML); without it the built-in defaults")
	c.Flags.BoolVar(&c.version, "version", false, "print the version and exit")
	c.Flags.Usage = func() {
		fmt.Fprintf(c.Flags.Output(), "usage: %s\n\nflags (each overrides the config file):\n", usage)
		c.Flags.PrintDefaults()
	}
	return c
}

// ErrDone means the command line was fully handled (--version, -h).
var ErrDone = errors.New("done")

// Parse parses args. It returns ErrDone after printing the version or the
// help, and a one-line error for a bad flag.
func (c *CLI) Parse(args []string, stdout io.Writer) error {
	c.Flags.SetOutput(io.Discard)
	err := c.Flags.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		c.Flags.SetOutput(stdout)
		c.Flags.Usage()
		return ErrDone
	}
	if err != nil {
		return fmt.Errorf("%s: %v (see -h)", c.Flags.Name(), err)
	}
	if c.Flags.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see -h)", c.Flags.Name(), c.Flags.Arg(0))
	}
	if c.version {
		fmt.Fprintln(stdout, VersionString(c.Flags.Name()))
		return ErrDone
	}
	return nil
}

// Override applies every flag that was set on the command line: set maps a
// flag name to the config field it sets and a function applying it.
func (c *CLI) Override(f *File, set map[string]Setter) {
	c.Flags.Visit(func(fl *flag.Flag) {
		if s, ok := set[fl.Name]; ok {
			s.Apply()
			f.SetByFlag(s.Field, fl.Name)
		}
	})
}

// Setter applies one flag to one config field.
type Setter struct {
	Field string
	Apply func()
}

// Fail ends the process for a command-line or configuration error: exit 0
// after ErrDone (--version, -h), else the one-line error on stderr and exit 2.
func Fail(err error) {
	if errors.Is(err, ErrDone) {
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(2)
}
