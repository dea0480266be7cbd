package benchkit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// RunSubcommand runs the subcommand named by os.Args[1] if cmds has it,
// with the arguments after it, and exits: 0 when it returns nil, 1 after
// printing "prog name: error" when it fails. It returns when there is no
// such subcommand, for the driver's own flags.
func RunSubcommand(prog string, cmds map[string]func(args []string) error) {
	if len(os.Args) < 2 {
		return
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		return
	}
	if err := cmd(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", prog, os.Args[1], err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Logf logs a line to stderr, after the time of day: the drivers' progress
// (the report goes to stdout).
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// ParseInts parses a comma-separated list of numbers, none below least.
func ParseInts(s string, least int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(f), "%d", &n); err != nil || n < least {
			if least == 1 {
				return nil, fmt.Errorf("%q is not a positive number", f)
			}
			return nil, fmt.Errorf("%q is not a number of at least %d", f, least)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// ParseVariants parses a comma-separated list of the names in known,
// without repeats, and appends baseline last whether the list names it or
// not: every round needs its baseline run, which the ratios divide by.
func ParseVariants(list string, known []string, baseline string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(list, ",") {
		v = strings.TrimSpace(v)
		if !slices.Contains(known, v) {
			return nil, fmt.Errorf("unknown variant %q (known: %s)", v, strings.Join(known, ", "))
		}
		if v != baseline && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return append(out, baseline), nil
}

// debianPackages names the Debian package of every command the drivers
// run; they install nothing themselves.
var debianPackages = map[string]string{
	"iptables-legacy-restore":  "iptables",
	"iptables-nft-restore":     "iptables",
	"iptables-legacy":          "iptables",
	"ip6tables-legacy-restore": "iptables",
	"ip6tables-nft-restore":    "iptables",
	"ip6tables-legacy":         "iptables",
	"nft":                      "nftables",
	"bpftool":                  "bpftool",
	"ip":                       "iproute2",
	"nsenter":                  "util-linux",
	"go":                       "golang (Go 1.26 toolchain)",
}

// PackageOf is the Debian package that provides command cmd.
func PackageOf(cmd string) string { return debianPackages[cmd] }

// RequireCommands fails when a command of need is not on PATH, naming
// each missing one with its package and suggesting install, e.g.
// "apt-get install -y iptables nftables".
func RequireCommands(need []string, install string) error {
	var missing []string
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", t, PackageOf(t)))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing commands: %s; install them, e.g. %s", strings.Join(missing, ", "), install)
	}
	return nil
}

// RequireRoot fails unless the process runs as root, suggesting the make
// target that runs the driver.
func RequireRoot(makeTarget string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: it creates network namespaces, cgroups and bpffs pins and loads eBPF programs; try: sudo make %s", makeTarget)
	}
	return nil
}

// Finish ends a driver's run: it prints rep (when the run got far enough
// to have one: a partial report still says what was measured) and, with a
// jsonPath, writes it there as JSON too; then, when the run failed, it
// prints err and exits 1.
func Finish[R any](prog string, rep *R, err error, jsonPath string, print func(io.Writer, *R)) {
	if rep != nil {
		print(os.Stdout, rep)
		if jsonPath != "" {
			if jerr := WriteJSON(jsonPath, rep); jerr != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", prog, jerr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(1)
	}
}

// WriteJSON writes v to path as indented JSON.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// NewTable is the reports' tab writer: columns two spaces apart, aligned
// right. Flush it after the last row.
func NewTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
}

// FirstLine is s up to its first newline, marked with " …" when there was
// more: a failure's summary in a report.
func FirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// LoadAverage is the first three fields of /proc/loadavg, "?" if unknown:
// the machines the drivers run on are shared, and timings depend on it.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
