package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// buildImage imports a busybox rootfs with the probe binary as testImage.
func buildImage() error {
	probe := filepath.Join(h.tmp, "probe")
	if err := goBuild(probe, "./integration/probe", "CGO_ENABLED=0"); err != nil {
		return err
	}
	busybox, err := findBinary("busybox", "/bin/busybox")
	if err != nil {
		return err
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	applets := strings.Fields(string(out))

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: now})
	}
	file := func(name, src string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(b)), ModTime: now}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"etc", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"root", 0o700}, {"tmp", 0o1777}, {"var", 0o755}, {"var/www", 0o755}} {
		if err := dir(d.name, d.mode); err != nil {
			return err
		}
	}
	if err := file("bin/busybox", busybox); err != nil {
		return err
	}
	if err := file("bin/probe", probe); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") || a == "[[" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return err
		}
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), dockerCmdTimeout)
	defer cancel()
	if _, stderr, err := runDocker(ctx, &buf, "import", "--change", `CMD ["/bin/sh"]`, "-", testImage); err != nil {
		return fmt.Errorf("docker import: %w: %s", err, stderr)
	}
	return nil
}
