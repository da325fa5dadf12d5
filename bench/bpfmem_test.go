package bench

import "testing"

func TestBPFMemoryCountsPinnedMapsTheirProgramsAndTheProgramsOwnMaps(t *testing.T) {
	maps := []bpfMap{
		{ID: 1, Name: "endpoints", BytesMemlock: 1000, Pinned: []string{"/sys/fs/bpf/membrane-bench/maps/endpoints"}},
		{ID: 2, Name: "ct", BytesMemlock: 5000, Pinned: []string{"/sys/fs/bpf/membrane-bench/maps/ct"}},
		{ID: 3, Name: ".rodata", BytesMemlock: 10},                                                                       // an endpoint program's constants
		{ID: 4, Name: "endpoints", BytesMemlock: 999999, Pinned: []string{"/sys/fs/bpf/membrane-benchx/maps/endpoints"}}, // another daemon, same prefix
		{ID: 5, Name: ".rodata", BytesMemlock: 777},                                                                      // another daemon's program constants
	}
	progs := []bpfProg{
		{ID: 10, Name: "from_container", BytesMemlock: 100, MapIDs: []int{1, 2, 3}},
		{ID: 11, Name: "policy_from_con", BytesMemlock: 200, MapIDs: []int{2}},
		{ID: 12, Name: "from_container", BytesMemlock: 100000, MapIDs: []int{4, 5}},
	}
	got := bpfMemory(maps, progs, "/sys/fs/bpf/membrane-bench")
	want := bpfUsage{MapBytes: 6010, ProgBytes: 300, Maps: 3, Progs: 2}
	if got != want {
		t.Errorf("bpfMemory = %+v, want %+v", got, want)
	}
}
