package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func scheduleInput() []task {
	var tasks []task
	for i := range 10 {
		tasks = append(tasks, task{name: fmt.Sprint("free-", i)})
	}
	for _, state := range []string{"rules-0", "rules-100", "allow"} {
		for i := range 3 {
			tasks = append(tasks, task{name: fmt.Sprint(state, "-", i), policy: state})
		}
	}
	return tasks
}

func TestScheduleRunsEveryTaskOnceUnderTheStateItNeeds(t *testing.T) {
	groups := scheduleRound(rand.New(rand.NewPCG(1, 2)), scheduleInput())
	seen := map[string]int{}
	states := map[string]bool{}
	for _, g := range groups {
		if states[g.policy] {
			t.Errorf("state %q entered twice in one round", g.policy)
		}
		states[g.policy] = true
		for _, tk := range g.tasks {
			seen[tk.name]++
			if tk.policy != "" && tk.policy != g.policy {
				t.Errorf("task %s needs %s but runs under %s", tk.name, tk.policy, g.policy)
			}
		}
	}
	if len(groups) != 3 {
		t.Errorf("%d groups, want one per state (3)", len(groups))
	}
	for _, tk := range scheduleInput() {
		if seen[tk.name] != 1 {
			t.Errorf("task %s ran %d times, want once", tk.name, seen[tk.name])
		}
	}
}

func order(groups []taskGroup) []string {
	var names []string
	for _, g := range groups {
		for _, tk := range g.tasks {
			names = append(names, tk.name)
		}
	}
	return names
}

func TestScheduleIsRandomButRepeatableFromTheSeed(t *testing.T) {
	a := order(scheduleRound(rand.New(rand.NewPCG(7, 7)), scheduleInput()))
	b := order(scheduleRound(rand.New(rand.NewPCG(7, 7)), scheduleInput()))
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different orders:\n%v\n%v", a, b)
	}
	c := order(scheduleRound(rand.New(rand.NewPCG(8, 8)), scheduleInput()))
	if slices.Equal(a, c) {
		t.Errorf("different seeds gave the same order %v", a)
	}
}

func TestScheduleWithoutStatesIsOneShuffledGroup(t *testing.T) {
	tasks := []task{{name: "a"}, {name: "b"}, {name: "c"}}
	groups := scheduleRound(rand.New(rand.NewPCG(1, 1)), tasks)
	if len(groups) != 1 || len(groups[0].tasks) != 3 || groups[0].policy != "" {
		t.Errorf("got %+v, want one group of the three tasks", groups)
	}
}
