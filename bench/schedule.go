package bench

import (
	"context"
	"math/rand/v2"
)

// task is one measurement of a round.
type task struct {
	name string
	// policy is the membrane policy state the task needs, "" for any.
	policy string
	run    func(ctx context.Context, round int) error
}

// taskGroup is a run of tasks under one membrane policy state.
type taskGroup struct {
	policy string
	tasks  []task
}

// scheduleRound puts a round's tasks in a random order. Tasks that need a
// membrane policy state are grouped by it, so that each state (installing
// up to 100,000 rules) is entered once per round; the groups come in a
// random order, tasks that need no state join a random group, and each
// group's tasks are shuffled.
func scheduleRound(rng *rand.Rand, tasks []task) []taskGroup {
	var groups []taskGroup
	index := map[string]int{}
	for _, t := range tasks {
		if t.policy == "" {
			continue
		}
		if _, ok := index[t.policy]; !ok {
			index[t.policy] = len(groups)
			groups = append(groups, taskGroup{policy: t.policy})
		}
	}
	if len(groups) == 0 {
		groups = []taskGroup{{}}
	}
	for _, t := range tasks {
		i := rng.IntN(len(groups))
		if t.policy != "" {
			i = index[t.policy]
		}
		groups[i].tasks = append(groups[i].tasks, t)
	}
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	for _, g := range groups {
		rng.Shuffle(len(g.tasks), func(i, j int) { g.tasks[i], g.tasks[j] = g.tasks[j], g.tasks[i] })
	}
	return groups
}
