package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeDaemon writes an executable named membraned into dir.
func fakeDaemon(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, daemonBinary)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFindDaemonPrefersTheOneBesideTheCLI(t *testing.T) {
	bin, other := t.TempDir(), t.TempDir()
	want := fakeDaemon(t, bin)
	fakeDaemon(t, other)
	t.Setenv("PATH", other)
	got, err := findDaemon(filepath.Join(bin, "membrane"))
	if err != nil || got != want {
		t.Fatalf("findDaemon = %q, %v; want %q (beside the CLI, ahead of PATH)", got, err, want)
	}
}

func TestFindDaemonFallsBackToPath(t *testing.T) {
	bin, other := t.TempDir(), t.TempDir()
	want := fakeDaemon(t, other)
	t.Setenv("PATH", other)
	got, err := findDaemon(filepath.Join(bin, "membrane"))
	if err != nil || got != want {
		t.Fatalf("findDaemon = %q, %v; want %q from PATH", got, err, want)
	}
}

func TestFindDaemonSaysWhereItLooked(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, daemonBinary), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	_, err := findDaemon(filepath.Join(bin, "membrane"))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(bin, daemonBinary)) || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("error %v; want one naming %s and how to build it", err, filepath.Join(bin, daemonBinary))
	}
}

func TestDaemonCommandRunsMembraned(t *testing.T) {
	// The real thing: both binaries built into one directory, and
	// `membrane daemon --help` printing the daemon's flags.
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	dir := t.TempDir()
	for out, pkg := range map[string]string{"membrane": ".", "membraned": "../membraned"} {
		if out, err := goBuild(t, filepath.Join(dir, out), pkg); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	out, err := runCommand(t, filepath.Join(dir, "membrane"), "daemon", "--help")
	if err != nil {
		t.Fatalf("membrane daemon --help: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Usage of membrane daemon") || !strings.Contains(out, "--spare-veths") {
		t.Fatalf("membrane daemon --help printed %q; want the daemon's flags", out)
	}
}

func goBuild(t *testing.T, out, pkg string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	return string(b), err
}

func runCommand(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	return string(b), err
}
