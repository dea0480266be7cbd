// Package guest is what tools/vmtest and its VMs' init (vminit) agree on:
// the configuration the host writes into the initramfs as /vmtest.json,
// and the marker that starts each line the guest reports on the console.
package guest

// ConfigPath is where the initramfs carries the Config.
const ConfigPath = "/vmtest.json"

// Marker starts every line the guest writes for the host to parse
// ("@@vmtest start <test> <uptime>", "... exit <test> <code> <uptime>", ...).
const Marker = "@@vmtest "

// Config is what vminit does in the VM.
type Config struct {
	// Modules are .ko paths in the initramfs, in load order.
	Modules []string `json:"modules"`
	// Root9P mounts the 9p share with this tag as the root filesystem.
	Root9P string `json:"root9p,omitempty"`
	// Keep are host directories the tests need (the repository, the run
	// directory with the test binaries, the Go module cache) that stay
	// visible where the guest puts tmpfs (/tmp, /root, ...): a clone under
	// /tmp must still be found there.
	Keep []string `json:"keep,omitempty"`
	// Env is the tests' environment.
	Env   []string `json:"env"`
	Tests []Test   `json:"tests"`
}

// Test is one test binary to run.
type Test struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Dir  string   `json:"dir"`
	Args []string `json:"args"`
}
