// Command sluice is the Sluice CLI; the command tree lives in pkg/cli.
package main

import (
	"fmt"
	"os"

	"github.com/sluice-net/sluice/pkg/cli"
)

func main() {
	if err := cli.NewRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}
