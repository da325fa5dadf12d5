package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// bpfMap and bpfProg are the parts of `bpftool -j` output the harness reads.
type bpfMap struct {
	ID           int      `json:"id"`
	Name         string   `json:"name"`
	BytesMemlock int64    `json:"bytes_memlock"`
	Pinned       []string `json:"pinned"`
}

type bpfProg struct {
	ID           int    `json:"id"`
	Name         string `json:"name"`
	BytesMemlock int64  `json:"bytes_memlock"`
	MapIDs       []int  `json:"map_ids"`
}

// bpfUsage is the kernel memory of one daemon's BPF objects.
type bpfUsage struct {
	MapBytes, ProgBytes int64
	Maps, Progs         int
}

// bpfMemory sums the memory of a daemon's BPF objects: the maps pinned
// under dir, the programs that use any of them (the shared policy programs
// and every endpoint's two), and the maps those programs hold that are
// not pinned (each endpoint program's read-only data, its constants).
func bpfMemory(maps []bpfMap, progs []bpfProg, dir string) bpfUsage {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	ours := map[int]bool{}
	for _, m := range maps {
		if slices.ContainsFunc(m.Pinned, func(p string) bool { return strings.HasPrefix(p, prefix) }) {
			ours[m.ID] = true
		}
	}
	var u bpfUsage
	held := map[int]bool{}
	for _, p := range progs {
		if !slices.ContainsFunc(p.MapIDs, func(id int) bool { return ours[id] }) {
			continue
		}
		u.Progs++
		u.ProgBytes += p.BytesMemlock
		for _, id := range p.MapIDs {
			held[id] = true
		}
	}
	for _, m := range maps {
		if ours[m.ID] || held[m.ID] {
			u.Maps++
			u.MapBytes += m.BytesMemlock
		}
	}
	return u
}

// measureBPFMemory asks bpftool for every map and program on the host and
// sums the daemon's.
func measureBPFMemory(ctx context.Context, bpftool, dir string) (bpfUsage, error) {
	var maps []bpfMap
	var progs []bpfProg
	for _, q := range []struct {
		args []string
		dst  any
	}{{[]string{"-j", "-f", "map", "show"}, &maps}, {[]string{"-j", "prog", "show"}, &progs}} {
		out, err := runCmd(ctx, append([]string{bpftool}, q.args...)...)
		if err != nil {
			return bpfUsage{}, fmt.Errorf("bpftool %s: %w", strings.Join(q.args, " "), err)
		}
		if err := json.Unmarshal([]byte(out), q.dst); err != nil {
			return bpfUsage{}, fmt.Errorf("bpftool %s: %w", strings.Join(q.args, " "), err)
		}
	}
	u := bpfMemory(maps, progs, dir)
	if u.Maps == 0 {
		return u, fmt.Errorf("bpftool: no map pinned under %s", dir)
	}
	return u, nil
}
