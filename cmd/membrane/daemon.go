package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// daemonBinary is the daemon's executable (cmd/membraned). `membrane
// daemon` runs it in place of itself: same process, so whoever started
// `membrane daemon` (a shell, systemd, a test harness) holds and signals
// the daemon itself.
const daemonBinary = "membraned"

// execDaemon replaces this process with the daemon, passing args on. It
// returns only when that cannot be done.
func execDaemon(args []string) error {
	self, err := os.Executable()
	if err != nil {
		self = "" // PATH only
	}
	path, err := findDaemon(self)
	if err != nil {
		return err
	}
	argv := append([]string{path}, args...)
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("run %s: %w", path, err)
	}
	return nil // not reached: Exec returns only on failure
}

// findDaemon looks for the daemon beside self, this executable, first (a
// build puts both in bin/), then in PATH.
func findDaemon(self string) (string, error) {
	var beside string
	if self != "" {
		beside = filepath.Join(filepath.Dir(self), daemonBinary)
		if isExecutableFile(beside) {
			return beside, nil
		}
	}
	path, err := exec.LookPath(daemonBinary)
	if err == nil {
		return path, nil
	}
	if beside == "" {
		return "", fmt.Errorf("%s is not in PATH: install it beside membrane (make build builds both)", daemonBinary)
	}
	if !errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("find %s: %w", daemonBinary, err)
	}
	return "", fmt.Errorf("%s is neither at %s nor in PATH: install it beside membrane (make build builds both)", daemonBinary, beside)
}

func isExecutableFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
