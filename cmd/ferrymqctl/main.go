// Command ferrymqctl operates a running ferrymq broker over its HTTP
// management API (RabbitMQ's paths, so most commands also work against
// RabbitMQ's management plugin), with rabbitmqctl's habits:
//
//	ferrymqctl status
//	ferrymqctl list queues|exchanges|bindings|connections|channels|consumers|sessions|retained|bridges|users|vhosts|permissions [field ...] [--json]
//	ferrymqctl purge <queue>
//	ferrymqctl delete queue|exchange <name>
//	ferrymqctl close-connection <name> [reason]
//	ferrymqctl remove-session <client-id> | clear-retained <filter>
//	ferrymqctl export <file> | import <file>
//	ferrymqctl add-user <name> [password] | set-permissions <user> <configure> <write> <read>
//	ferrymqctl bridge pause|resume <name>
//
// Global flags may come before or after the command: --url (default
// http://localhost:15672), --user and --password (default guest/guest),
// --vhost (default /), --json, --timeout, --cacert; FERRYMQ_URL,
// FERRYMQ_USER, FERRYMQ_PASSWORD and FERRYMQ_VHOST set the defaults.
//
// Exit status, as rabbitmqctl's (sysexits): 0 done, 1 the broker answered
// with an error (its reason is printed), 64 usage, 69 the broker could not
// be reached, 77 the user was refused (401/403).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymq/ferrymq/cmd/internal/buildinfo"
)

// Exit statuses (sysexits.h, as rabbitmqctl uses them).
const (
	exitOK          = 0
	exitAPI         = 1  // the broker answered with an error
	exitUsage       = 64 // EX_USAGE
	exitUnavailable = 69 // EX_UNAVAILABLE: could not reach the broker
	exitNoPerm      = 77 // EX_NOPERM: 401 or 403
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the global flags.
type options struct {
	url, user, password, vhost string
	vhostSet                   bool // --vhost (or FERRYMQ_VHOST) given: list only that vhost
	userSet                    bool // --user or FERRYMQ_USER given: wins over a user in --url
	json                       bool
	timeout                    time.Duration
	caCert                     string
	ifUnused, ifEmpty          bool
	tags                       string
}

// errVersion is what parseArgs returns for --version.
var errVersion = errors.New("version requested")

// version is set by `make build` (-ldflags -X main.version=...), as the
// broker's.
var version string

// buildVersion is version, else what the Go toolchain recorded.
func buildVersion() string { return buildinfo.Version(version) }

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const usageText = `Usage: ferrymqctl [flags] <command> [args]

Commands:
  status                                  the broker's overview: version, totals, rates, listeners, alarms
  list <what> [field ...]                 a table (or --json) of queues, exchanges, bindings, connections,
                                          channels, consumers, sessions and retained (MQTT), bridges, users, vhosts,
                                          permissions; with fields, those JSON fields as columns (a.b for nested)
  purge <queue>                           remove every ready message of a queue
  delete queue|exchange <name>            delete one (--if-unused, --if-empty for queues)
  close-connection <name> [reason]        close an AMQP (320 CONNECTION_FORCED) or MQTT connection
  remove-session <client-id>              remove an MQTT session (and close its connection)
  clear-retained <filter>                 delete the MQTT retained messages matching a topic filter
  export <file>                           write the definitions (users, vhosts, queues, ...) as JSON; - for stdout
  import <file>                           load definitions JSON (from ferrymq or RabbitMQ); - for stdin
  add-user <name> [password]              add a user (password read from stdin when left out; --tags)
  set-permissions <user> <conf> <write> <read>  set a user's permissions on --vhost
  bridge pause|resume <name>              pause or resume a bridge link

Flags (before or after the command):
`

// run executes one ferrymqctl command and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, pos, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, "ferrymqctl", buildVersion(), runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferrymqctl: %v (see ferrymqctl --help)\n", err)
		return exitUsage
	}
	c, err := newClient(o)
	if err != nil {
		fmt.Fprintf(stderr, "ferrymqctl: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	err = dispatch(ctx, c, o, pos, stdin, stdout)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "ferrymqctl: %v\n", err)
	var ue *usageError
	var ae *apiError
	var ne *netError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ne):
		return exitUnavailable
	case errors.As(err, &ae) && (ae.status == 401 || ae.status == 403):
		return exitNoPerm
	}
	return exitAPI
}

// parseArgs reads the global flags wherever they stand among the
// positional arguments, as rabbitmqctl takes -p after the command.
func parseArgs(args []string, stderr io.Writer) (options, []string, error) {
	// An empty variable counts as unset, as in most shells' habits.
	env := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return def
	}
	var o options
	fs := flag.NewFlagSet("ferrymqctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.url, "url", env("FERRYMQ_URL", "http://localhost:15672"), "management API base `URL` (env FERRYMQ_URL)")
	fs.StringVar(&o.user, "user", env("FERRYMQ_USER", "guest"), "user `name` (env FERRYMQ_USER)")
	fs.StringVar(&o.password, "password", env("FERRYMQ_PASSWORD", "guest"), "`password` (env FERRYMQ_PASSWORD)")
	vhostEnv := os.Getenv("FERRYMQ_VHOST")
	vhostFromEnv := vhostEnv != ""
	if !vhostFromEnv {
		vhostEnv = "/"
	}
	fs.StringVar(&o.vhost, "vhost", vhostEnv, "`vhost` of the command; list shows every vhost unless given (env FERRYMQ_VHOST)")
	fs.BoolVar(&o.json, "json", false, "print the API's JSON instead of a table")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this `duration`")
	fs.StringVar(&o.caCert, "cacert", "", "PEM `file` of the CA that signed an https broker's certificate")
	fs.BoolVar(&o.ifUnused, "if-unused", false, "delete: only if the queue or exchange is unused")
	fs.BoolVar(&o.ifEmpty, "if-empty", false, "delete queue: only if it is empty")
	fs.StringVar(&o.tags, "tags", "", "add-user: comma-separated `tags` (administrator, monitoring, management, ...)")
	showVersion := fs.Bool("version", false, "print ferrymqctl's version and exit (status shows the broker's)")

	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stderr, usageText)
				fs.SetOutput(stderr)
				fs.PrintDefaults()
			}
			return o, nil, err
		}
		rest := fs.Args()
		// After "--" everything is positional (a reason that starts with -).
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	o.vhostSet = vhostFromEnv
	o.userSet = os.Getenv("FERRYMQ_USER") != ""
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "vhost":
			o.vhostSet = true
		case "user", "password":
			o.userSet = true
		}
	})
	if *showVersion {
		return o, nil, errVersion
	}
	if o.timeout <= 0 {
		return o, nil, errors.New("--timeout must be positive")
	}
	if len(pos) == 0 {
		return o, nil, errors.New("no command")
	}
	return o, pos, nil
}

// dispatch runs the command named by pos[0].
func dispatch(ctx context.Context, c *client, o options, pos []string, stdin io.Reader, stdout io.Writer) error {
	cmd, args := pos[0], pos[1:]
	want := func(n int, what string) error {
		if len(args) != n {
			return usagef("%s takes %s", cmd, what)
		}
		return nil
	}
	switch cmd {
	case "status":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		return status(ctx, c, o, stdout)
	case "list":
		if len(args) == 0 {
			return usagef("list takes one of: %s", strings.Join(listNames(), ", "))
		}
		return list(ctx, c, o, args[0], args[1:], stdout)
	case "clear-retained":
		if err := want(1, "an MQTT topic filter (# for all)"); err != nil {
			return err
		}
		return clearRetained(ctx, c, o, args[0], stdout)
	case "purge":
		if err := want(1, "a queue name"); err != nil {
			return err
		}
		if err := c.do(ctx, "DELETE", nil, nil, nil, "queues", o.vhost, args[0], "contents"); err != nil {
			return fmt.Errorf("purge queue %q in vhost %q: %w", args[0], o.vhost, err)
		}
		fmt.Fprintf(stdout, "Purged queue %q in vhost %q\n", args[0], o.vhost)
		return nil
	case "delete":
		if len(args) != 2 || (args[0] != "queue" && args[0] != "exchange") {
			return usagef("delete takes queue|exchange <name>")
		}
		return deleteObject(ctx, c, o, args[0], args[1], stdout)
	case "close-connection":
		if len(args) != 1 && len(args) != 2 {
			return usagef("close-connection takes <name> [reason]")
		}
		reason := "Closed via ferrymqctl"
		if len(args) == 2 {
			reason = args[1]
		}
		h := map[string]string{"X-Reason": reason}
		if err := c.do(ctx, "DELETE", h, nil, nil, "connections", args[0]); err != nil {
			return fmt.Errorf("close connection %q: %w", args[0], err)
		}
		fmt.Fprintf(stdout, "Closed connection %q: %s\n", args[0], reason)
		return nil
	case "remove-session":
		if err := want(1, "an MQTT client id"); err != nil {
			return err
		}
		if err := c.do(ctx, "DELETE", nil, nil, nil, "mqtt", "sessions", o.vhost, args[0]); err != nil {
			return fmt.Errorf("remove MQTT session %q in vhost %q: %w", args[0], o.vhost, err)
		}
		fmt.Fprintf(stdout, "Removed MQTT session %q in vhost %q\n", args[0], o.vhost)
		return nil
	case "export":
		if err := want(1, "a file name (- for stdout)"); err != nil {
			return err
		}
		return export(ctx, c, o, args[0], stdout)
	case "import":
		if err := want(1, "a file name (- for stdin)"); err != nil {
			return err
		}
		return importDefs(ctx, c, o, args[0], stdin, stdout)
	case "add-user":
		if len(args) != 1 && len(args) != 2 {
			return usagef("add-user takes <name> [password]")
		}
		return addUser(ctx, c, o, args, stdin, stdout)
	case "set-permissions":
		if err := want(4, "<user> <configure> <write> <read>"); err != nil {
			return err
		}
		body := map[string]string{"configure": args[1], "write": args[2], "read": args[3]}
		if err := c.do(ctx, "PUT", nil, body, nil, "permissions", o.vhost, args[0]); err != nil {
			return fmt.Errorf("set permissions of %q in vhost %q: %w", args[0], o.vhost, err)
		}
		fmt.Fprintf(stdout, "Set permissions of %q in vhost %q\n", args[0], o.vhost)
		return nil
	case "bridge":
		if len(args) != 2 || (args[0] != "pause" && args[0] != "resume") {
			return usagef("bridge takes pause|resume <name>")
		}
		if err := c.do(ctx, "POST", nil, nil, nil, "bridges", args[1], args[0]); err != nil {
			return fmt.Errorf("%s bridge %q: %w", args[0], args[1], err)
		}
		past := map[string]string{"pause": "Paused", "resume": "Resumed"}[args[0]]
		fmt.Fprintf(stdout, "%s bridge %q\n", past, args[1])
		return nil
	}
	return usagef("unknown command %q", cmd)
}
