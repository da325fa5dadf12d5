package envflag

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func newFlags() (*pflag.FlagSet, *string, *int) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	return fs, fs.String("state-dir", "/var/lib/membrane", ""), fs.Int("spare-veths", 4, "")
}

func TestParseTakesEnvironmentAsDefaults(t *testing.T) {
	t.Setenv("MEMBRANE_STATE_DIR", "/tmp/env")
	t.Setenv("MEMBRANE_SPARE_VETHS", "") // empty: ignored
	fs, dir, spares := newFlags()
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *dir != "/tmp/env" || *spares != 4 {
		t.Fatalf("state-dir %q, spare-veths %d; want /tmp/env from the environment and the default 4", *dir, *spares)
	}
}

func TestParseCommandLineWinsOverEnvironment(t *testing.T) {
	t.Setenv("MEMBRANE_STATE_DIR", "/tmp/env")
	fs, dir, _ := newFlags()
	if err := Parse(fs, []string{"--state-dir", "/tmp/flag"}); err != nil {
		t.Fatal(err)
	}
	if *dir != "/tmp/flag" {
		t.Fatalf("state-dir %q, want /tmp/flag from the command line", *dir)
	}
}

func TestParseNamesTheBadVariable(t *testing.T) {
	t.Setenv("MEMBRANE_SPARE_VETHS", "many")
	fs, _, _ := newFlags()
	err := Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), `MEMBRANE_SPARE_VETHS="many"`) {
		t.Fatalf("error %v, want one naming MEMBRANE_SPARE_VETHS=\"many\"", err)
	}
}
