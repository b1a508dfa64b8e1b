// Command bulwark is the single binary of the Bulwark zero-trust platform:
// the control plane, the gateway, the agent and the CLI tools.
package main

import (
	"os"

	"github.com/bulwarksec/bulwark/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
