package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// dockerd is the private Docker engine of a run: its own data-root,
// exec-root, socket and pidfile, and an empty config file so that the
// host's /etc/docker/daemon.json stays out of it.
type dockerd struct {
	dir    string // everything of this engine lives here
	host   string // DOCKER_HOST value
	env    []string
	docker string
	proc   *proc
}

func newDockerd(dir, dockerCLI string) *dockerd {
	host := "unix://" + filepath.Join(dir, "docker.sock")
	return &dockerd{
		dir:    dir,
		host:   host,
		docker: dockerCLI,
		env:    []string{"DOCKER_HOST=" + host, "DOCKER_CONFIG=" + filepath.Join(dir, "cli-config"), "DOCKER_CLI_HINTS=false"},
	}
}

// start starts the engine and waits until it answers.
func (d *dockerd) start(ctx context.Context, dockerdBin string) error {
	cfg := filepath.Join(d.dir, "daemon.json")
	if err := os.MkdirAll(filepath.Join(d.dir, "cli-config"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
		return err
	}
	args := []string{
		dockerdBin,
		"--config-file", cfg,
		"--data-root", filepath.Join(d.dir, "data"),
		"--exec-root", filepath.Join(d.dir, "exec"),
		"--pidfile", filepath.Join(d.dir, "docker.pid"),
		"-H", d.host,
		// No docker0: the bridge setup makes its own network, and a
		// second docker0 would collide with a host engine's.
		"--bridge=none",
		// The bridge network is dual-stack: Docker 20.10 programs
		// ip6tables for it (forwarding between its containers
		// included) only with these, as it programs iptables for
		// IPv4; without them bridged IPv6 meets whatever the host's
		// ip6tables FORWARD policy is.
		"--experimental", "--ip6tables",
	}
	if !overlaySupported() {
		args = append(args, "--storage-driver=vfs")
	}
	p, err := startProc("dockerd", filepath.Join(d.dir, "dockerd.log"), nil, args...)
	if err != nil {
		return err
	}
	d.proc = p
	deadline := time.Now().Add(dockerdStartTimeout)
	for {
		if p.exited() {
			return fmt.Errorf("dockerd exited during start: %v%s", p.cmd.ProcessState, logTail(p.log))
		}
		ctx1, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := d.run(ctx1, "version", "--format", "{{.Server.Version}}")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer within %s: %w", dockerdStartTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *dockerd) stop() error {
	if d.proc == nil {
		return nil
	}
	return d.proc.stop(stopGrace)
}

// run runs one docker CLI command against this engine.
func (d *dockerd) run(ctx context.Context, args ...string) (string, error) {
	out, err := cmdSpec{argv: append([]string{d.docker}, args...), env: d.env, timeout: dockerCmdTimeout}.run(ctx)
	return strings.TrimSpace(out), err
}

// buildImage imports the busybox image with the repository's script.
func (d *dockerd) buildImage(ctx context.Context, moduleRoot string) error {
	script := filepath.Join(moduleRoot, "hack", "busybox-image.sh")
	_, err := cmdSpec{argv: []string{"bash", script, imageName}, env: d.env, timeout: dockerCmdTimeout}.run(ctx)
	if err != nil {
		return fmt.Errorf("build image %s: %w", imageName, err)
	}
	return nil
}

// container is a running container the harness made.
type container struct {
	name  string
	id    string
	pid   int
	netns string // /proc/PID/ns/net
}

// runContainer starts a container detached and returns it with its
// network namespace.
func (d *dockerd) runContainer(ctx context.Context, name string, runArgs []string, cmd ...string) (container, error) {
	args := append([]string{"run", "-d", "--name", name, "--label", containerLabel}, runArgs...)
	args = append(args, imageName)
	args = append(args, cmd...)
	id, err := d.run(ctx, args...)
	if err != nil {
		return container{}, fmt.Errorf("run container %s: %w", name, err)
	}
	return d.inspectContainer(ctx, name, id)
}

func (d *dockerd) inspectContainer(ctx context.Context, name, id string) (container, error) {
	out, err := d.run(ctx, "inspect", "--format", "{{.State.Pid}}", id)
	if err != nil {
		return container{}, fmt.Errorf("inspect container %s: %w", name, err)
	}
	pid, err := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		return container{}, fmt.Errorf("container %s: pid %q: not running", name, out)
	}
	return container{name: name, id: id, pid: pid, netns: fmt.Sprintf("/proc/%d/ns/net", pid)}, nil
}

// removeAll removes every container and network of this engine.
func (d *dockerd) removeAll(ctx context.Context) error {
	var errs []string
	if ids, err := d.run(ctx, "ps", "-aq"); err == nil && ids != "" {
		if _, err := d.run(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := d.removeNetworks(ctx); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove containers and networks: %s", strings.Join(errs, "; "))
	}
	return nil
}

// removeNetworks removes the custom networks. Docker may still hold an
// endpoint of a container it just removed; such an endpoint is
// disconnected by force and the removal tried again.
func (d *dockerd) removeNetworks(ctx context.Context) error {
	var err error
	for attempt := range 3 {
		ids, lsErr := d.run(ctx, "network", "ls", "-q", "--filter", "type=custom")
		if lsErr != nil || ids == "" {
			return lsErr
		}
		if _, err = d.run(ctx, append([]string{"network", "rm"}, strings.Fields(ids)...)...); err == nil {
			return nil
		}
		for _, id := range strings.Fields(ids) {
			eps, _ := d.run(ctx, "network", "inspect", "--format", "{{range $k, $v := .Containers}}{{$k}} {{end}}", id)
			for _, ep := range strings.Fields(eps) {
				_, _ = d.run(ctx, "network", "disconnect", "-f", id, ep)
			}
		}
		time.Sleep(time.Duration(attempt+1) * time.Second)
	}
	return err
}

func overlaySupported() bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(strings.TrimPrefix(line, "nodev")) == "overlay" {
				return true
			}
		}
	}
	return exec.Command("modprobe", "overlay").Run() == nil
}

// logTail returns the end of a log file for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return tail("log "+filepath.Base(path), string(b))
}
