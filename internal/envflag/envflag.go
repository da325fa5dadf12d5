// Package envflag parses a pflag.FlagSet with MEMBRANE_* environment
// variables as defaults, so that every flag of the daemon and the CLI can
// also be set the way a managed plugin is configured: by environment.
package envflag

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Prefix: a flag --some-flag is also read from MEMBRANE_SOME_FLAG.
const Prefix = "MEMBRANE_"

// Name returns the environment variable that sets the flag called flag.
func Name(flag string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Parse applies the environment variables of fs's flags (empty ones are
// ignored), then parses args, which win over them. A value the flag
// refuses is an error that names the variable.
func Parse(fs *pflag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		name := Name(f.Name)
		if v, ok := os.LookupEnv(name); ok && v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("environment %s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	return fs.Parse(args)
}
