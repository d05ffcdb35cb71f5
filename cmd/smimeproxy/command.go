package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"smimeproxy/storage/postgres"
)

// env is what a command may touch of the outside world, so that tests can run
// every command in process.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// tty opens the controlling terminal for prompts; nil means there is none.
	tty func() (ttyFile, error)
	// hup delivers SIGHUP to serve; nil means serve listens for the signal.
	hup chan os.Signal
	// db is the database the stores live in, once a command opened it.
	db *postgres.DB
}

// command is one subcommand: its own flags, help text and behaviour.
type command struct {
	name  string
	usage string // the synopsis after "smimeproxy "
	short string // one line for the command list
	help  string // the description in --help, before the flags
	// examples are shown under EXAMPLES, one command per line.
	examples string
	// flags registers the command's flags; run receives the positional arguments.
	flags func(fs *flag.FlagSet)
	// maxArgs is how many positional arguments the command takes at most.
	maxArgs int
	run     func(ctx context.Context, e *env, args []string) error
	subs    []*command
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// Exit statuses, the same for every command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const exitCodesHelp = `EXIT CODES
  0  success
  1  failure; the reason is printed on standard error
  2  usage error`

func run(ctx context.Context, args []string, e *env) (code int) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(e.stderr, "smimeproxy: internal error (a bug; please report it with what follows): %s\n%s", panicText(v), debug.Stack())
			code = exitFailure
		}
	}()
	defer e.close()
	root := &command{name: "smimeproxy", subs: commands()}
	return root.dispatch(ctx, e, nil, args)
}

// panicText describes a panic without printing its value, which may carry
// message text or key bytes: a runtime error's text is the runtime's own
// (indexes, lengths, type names), anything else is named by its type.
func panicText(v any) string {
	if re, ok := v.(runtime.Error); ok {
		return re.Error()
	}
	return fmt.Sprintf("a panic with a value of type %T", v)
}

// dispatch finds the subcommand named by args[0], or runs c itself.
func (c *command) dispatch(ctx context.Context, e *env, path []string, args []string) int {
	path = append(path, c.name)
	if len(c.subs) > 0 {
		if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			if len(args) > 1 && args[0] == "help" {
				if sub := c.find(args[1]); sub != nil {
					return sub.dispatch(ctx, e, path, []string{"--help"})
				}
			}
			c.printList(e.stdout, path)
			if len(args) == 0 {
				return exitUsage
			}
			return exitOK
		}
		sub := c.find(args[0])
		if sub == nil {
			fmt.Fprintf(e.stderr, "%s: unknown command %q; run '%s --help' for the list\n",
				strings.Join(path, " "), args[0], strings.Join(path, " "))
			return exitUsage
		}
		return sub.dispatch(ctx, e, path, args[1:])
	}

	name := strings.Join(path, " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if c.flags != nil {
		c.flags(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(e.stdout, path, fs)
		return exitOK
	}
	if err == nil && len(pos) > c.maxArgs {
		err = usagef("unexpected argument %q", pos[c.maxArgs])
	}
	if err == nil {
		err = c.run(ctx, e, pos)
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
		return exitFailure
	}
}

func (c *command) find(name string) *command {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// parseInterspersed parses flags wherever they appear among the positional
// arguments ("import FILE --password-file P"), up to a "--".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *command) printList(w io.Writer, path []string) {
	name := strings.Join(path, " ")
	if c.help != "" {
		fmt.Fprintf(w, "%s\n\n", c.help)
	} else {
		fmt.Fprintf(w, "%s: a transparent S/MIME proxy for SMTP submission and IMAP\n\n", name)
	}
	fmt.Fprintf(w, "Usage: %s COMMAND [ARGUMENTS]\n\nCommands:\n", name)
	for _, s := range c.subs {
		fmt.Fprintf(w, "  %-12s %s\n", s.name, s.short)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's options.\n", name)
}

func (c *command) printHelp(w io.Writer, path []string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s %s\n\n%s\n", strings.Join(path[:len(path)-1], " "), c.usage, c.short)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintf(w, "\nFLAGS\n")
		fs.VisitAll(func(f *flag.Flag) {
			arg, text := flag.UnquoteUsage(f)
			if arg != "" {
				arg = " " + arg
			}
			if f.DefValue != "" && f.DefValue != "false" {
				text += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, "  --%s%s\n      %s\n", f.Name, arg, text)
		})
	}
	if c.examples != "" {
		fmt.Fprintf(w, "\nEXAMPLES\n%s\n", strings.TrimRight(c.examples, "\n"))
	}
	fmt.Fprintf(w, "\n%s\n", exitCodesHelp)
}
