package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLILinksNoDaemonPackage keeps the CLI small: every command is a
// process start, and each package linked in adds its initialisation to it
// (docs/architecture.md, "Two binaries").
func TestCLILinksNoDaemonPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/spf13/pflag":                            true,
		"github.com/membrane-net/membrane/internal/envflag": true,
		"github.com/membrane-net/membrane/internal/apiview": true,
		"github.com/membrane-net/membrane/cmd/membrane":     true,
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(strings.SplitN(pkg, "/", 2)[0], ".") && !allowed[pkg] {
			t.Errorf("the CLI links %s: keep daemon dependencies in cmd/membraned", pkg)
		}
		if pkg == "net/http" {
			t.Errorf("the CLI links net/http: its client's setup costs every command about a millisecond")
		}
	}
}
