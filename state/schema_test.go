package state

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestStateStoreSchema pins the schema: a change to a table or an index shows
// up as a diff of testdata/schema.golden (rewrite it with go test -update)
// and must be matched by a checkpoint format decision.
func TestStateStoreSchema(t *testing.T) {
	schema := Schema()
	if err := schema.Validate(); err != nil {
		t.Fatalf("schema is invalid: %v", err)
	}

	var b strings.Builder
	tables := make([]string, 0, len(schema.Tables))
	for name := range schema.Tables {
		tables = append(tables, name)
	}
	sort.Strings(tables)
	for _, name := range tables {
		table := schema.Tables[name]
		fmt.Fprintf(&b, "table=%s\n", name)
		indexes := make([]string, 0, len(table.Indexes))
		for name := range table.Indexes {
			indexes = append(indexes, name)
		}
		sort.Strings(indexes)
		for _, name := range indexes {
			idx := table.Indexes[name]
			fmt.Fprintf(&b, "  index=%s unique=%v allow-missing=%v\n", name, idx.Unique, idx.AllowMissing)
			fmt.Fprintf(&b, "    indexer=%T %+v\n", idx.Indexer, idx.Indexer)
			if strings.HasSuffix(name, "_prefix") {
				t.Errorf("table %s: index %q ends in _prefix, which memdb reads as a prefix scan", table.Name, name)
			}
		}
	}
	got := b.String()

	golden := filepath.Join("testdata", "schema.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./state -run TestStateStoreSchema -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("schema differs from %s (rerun with -update if the change is intended):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}
