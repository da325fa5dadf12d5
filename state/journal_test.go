package state

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// journalWrites makes n writes of every kind: puts, replacements and
// deletes, several tables in one write.
func journalWrites(t *testing.T, s *Store, n int) []tables {
	t.Helper()
	var states []tables
	for i := range n {
		mustWrite(t, s, func(txn *memdb.Txn) error {
			if err := PutMeta(txn, fmt.Sprint("k", i), strings.Repeat("v", i)); err != nil {
				return err
			}
			if err := PutNetwork(txn, &Network{ID: fmt.Sprint("n", i), Index: uint32(i + 100), Created: created}); err != nil {
				return err
			}
			if err := PutPolicy(txn, &Policy{Name: fmt.Sprint("p", i%3), Rule: []byte(fmt.Sprintf(`{"n":%d}`, i)), Revision: uint64(i), Imported: created}); err != nil {
				return err
			}
			if i%4 == 3 {
				if err := DeleteNetwork(txn, fmt.Sprint("n", i-1)); err != nil {
					return err
				}
				return DeletePolicy(txn, "p0")
			}
			return nil
		})
		states = append(states, dump(t, s))
	}
	return states
}

func TestJournalReplaysWritesAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpenJournaled(t, dir)
	fill(t, s)
	states := journalWrites(t, s, 12)
	if files := checkpointFiles(t, dir); len(files) != 0 {
		t.Errorf("small writes made checkpoints %v, want the journal only", files)
	}
	s2, r := mustOpenJournaled(t, dir)
	if r.Replayed != 13 || len(r.Skipped) != 0 {
		t.Errorf("Restored = %+v, want 13 records replayed, nothing skipped", r)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, states[len(states)-1]) {
		t.Errorf("after reopen:\n got %+v\nwant %+v", got, states[len(states)-1])
	}
}

// TestJournalTornRecordIsCutAndReported: a crash in the middle of an
// append leaves part of a record. Whatever part, the records before it
// load, the torn one is reported and cut off, and writes go on after the
// last valid record.
func TestJournalTornRecordIsCutAndReported(t *testing.T) {
	base := t.TempDir()
	s, _ := mustOpenJournaled(t, base)
	states := journalWrites(t, s, 4)
	path := filepath.Join(base, journalName(0))
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before := int(s.journalSize) - lastRecordSize(t, full)
	cuts := []int{}
	for n := before + 1; n < len(full); n++ {
		cuts = append(cuts, n)
	}
	for _, n := range cuts {
		dir := t.TempDir()
		torn := append(full[:n:n], []byte("\x00garbage")[:min(8, n%9)]...)
		if err := os.WriteFile(filepath.Join(dir, journalName(0)), torn, 0o600); err != nil {
			t.Fatal(err)
		}
		s2, r := mustOpenJournaled(t, dir)
		var je *JournalError
		if len(r.Skipped) != 1 || !errors.As(r.Skipped[0], &je) || je.Offset != int64(before) || !errors.Is(je, ErrCorruptJournal) {
			t.Fatalf("cut at %d: Skipped = %v, want one *JournalError at offset %d", n, r.Skipped, before)
		}
		if got := dump(t, s2); !reflect.DeepEqual(got, states[2]) {
			t.Fatalf("cut at %d: loaded %+v, want the state before the torn write", n, got)
		}
		mustWrite(t, s2, func(txn *memdb.Txn) error { return PutMeta(txn, "after", "crash") })
		s3, r := mustOpenJournaled(t, dir)
		if len(r.Skipped) != 0 || r.Replayed != 4 {
			t.Fatalf("cut at %d, written again: Restored = %+v, want 4 records and nothing skipped", n, r)
		}
		if v, err := GetMeta(s3.Read(), "after"); err != nil || v != "crash" {
			t.Fatalf("cut at %d: the write after the crash is lost (%q, %v)", n, v, err)
		}
	}
}

// lastRecordSize is the size of the last record of a journal image.
func lastRecordSize(t *testing.T, b []byte) int {
	t.Helper()
	last := 0
	for off := 0; off < len(b); {
		_, n, err := decodeJournalRecord(b[off:])
		if err != nil {
			t.Fatal(err)
		}
		off, last = off+n, n
	}
	return last
}

func TestJournalFlippedBitStopsReplayThere(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpenJournaled(t, dir)
	states := journalWrites(t, s, 6)
	path := filepath.Join(dir, journalName(0))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a payload bit of the third record.
	off := 0
	for range 2 {
		_, n, _ := decodeJournalRecord(b[off:])
		off += n
	}
	b[off+journalHeaderSize+3] ^= 0x10
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, r := mustOpenJournaled(t, dir)
	if r.Replayed != 2 || len(r.Skipped) != 1 || !errors.Is(r.Skipped[0], ErrCorruptJournal) {
		t.Fatalf("Restored = %+v, want 2 records and the corrupt one reported", r)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, states[1]) {
		t.Errorf("loaded %+v, want the state of the first two writes", got)
	}
}

// TestJournalCompactsIntoCheckpoint: once the journal outgrows the
// checkpoint, a write checkpoints the whole state and starts a new
// journal; old journals go with their checkpoints.
func TestJournalCompactsIntoCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpenJournaled(t, dir)
	s.journalMin = 2000
	states := journalWrites(t, s, 60)
	files := checkpointFiles(t, dir)
	if len(files) < 2 || len(files) > checkpointsKept {
		t.Fatalf("checkpoints %v: want compactions, newest %d kept", files, checkpointsKept)
	}
	journals, _ := listJournals(dir)
	oldest, _ := parseCheckpointName(files[0])
	for _, seq := range journals {
		if seq < oldest {
			t.Errorf("journal %d outlived its checkpoint", seq)
		}
	}
	s2, r := mustOpenJournaled(t, dir)
	if r.Path != filepath.Join(dir, files[len(files)-1]) || len(r.Skipped) != 0 {
		t.Errorf("Restored = %+v, want the newest checkpoint", r)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, states[len(states)-1]) {
		t.Errorf("after reopen: %+v, want %+v", got, states[len(states)-1])
	}

	// The newest checkpoint corrupt: the one before it and its journal
	// load, which is the state just before that checkpoint's write.
	newest := filepath.Join(dir, files[len(files)-1])
	if err := os.WriteFile(newest, []byte("MEMBRANE garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	s3, r := mustOpenJournaled(t, dir)
	if r.Path != filepath.Join(dir, files[len(files)-2]) || len(r.Skipped) != 1 {
		t.Fatalf("Restored = %+v, want the fallback checkpoint", r)
	}
	got := dump(t, s3)
	found := false
	for _, st := range states {
		found = found || reflect.DeepEqual(got, st)
	}
	if !found {
		t.Errorf("fallback state %+v is none of the states written", got)
	}
	// It does not append to a journal that a newer checkpoint follows.
	mustWrite(t, s3, func(txn *memdb.Txn) error { return PutMeta(txn, "after", "fallback") })
	if _, r = mustOpenJournaled(t, dir); len(r.Skipped) != 0 || r.Replayed != 0 {
		t.Errorf("after the write: Restored = %+v, want a fresh checkpoint", r)
	}
}

// TestJournalSurvivesKill kills (SIGKILL) a process in the middle of its
// writes, again and again: every write it reported done is there after,
// and the store opens with at most a torn last record reported.
func TestJournalSurvivesKill(t *testing.T) {
	if dir := os.Getenv("MEMBRANE_STATE_KILL_DIR"); dir != "" {
		killChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestJournalSurvivesKill$")
		cmd.Env = append(os.Environ(), "MEMBRANE_STATE_KILL_DIR="+dir, "MEMBRANE_STATE_KILL_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		deadline := time.Now().Add(time.Duration(50+round*37) * time.Millisecond)
		for time.Now().Before(deadline) && lines.Scan() {
			acked[lines.Text()] = true
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for lines.Scan() {
			acked[lines.Text()] = true // written before the kill
		}
		cmd.Wait()
		s, r, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Skipped {
			if !errors.Is(e, ErrCorruptJournal) {
				t.Fatalf("round %d: %v", round, e)
			}
		}
		txn := s.Read()
		for key := range acked {
			if _, err := GetMeta(txn, key); err != nil {
				t.Fatalf("round %d: acknowledged write %s lost: %v", round, key, err)
			}
		}
	}
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged: the test proves little", len(acked))
	}
}

// killChild writes until killed, printing each key once its write is done.
func killChild(dir string) {
	s, _, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s.journalMin = 64 << 10 // compact now and then too
	round := os.Getenv("MEMBRANE_STATE_KILL_ROUND")
	for i := 0; ; i++ {
		key := fmt.Sprintf("r%s-%d", round, i)
		err := s.Write(func(txn *memdb.Txn) error { return PutMeta(txn, key, strings.Repeat("x", i%500)) })
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(key)
	}
}

// TestJournalWriteFailsWhenDirectoryIsGone: appends to a journal that is
// no longer in the state directory would never be read again, so the
// write must fail (as a checkpoint would) and change nothing.
func TestJournalWriteFailsWhenDirectoryIsGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, _ := mustOpenJournaled(t, dir)
	journalWrites(t, s, 2)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(func(txn *memdb.Txn) error { return PutMeta(txn, "lost", "yes") }); err == nil {
		t.Fatal("a write into a removed state directory succeeded")
	}
	if _, err := GetMeta(s.Read(), "lost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the failed write is visible in memory (%v)", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "after", "yes") })
	s2, _ := mustOpenJournaled(t, dir)
	if _, err := GetMeta(s2.Read(), "k1"); err != nil {
		t.Errorf("the state before the failure did not reach the new checkpoint: %v", err)
	}
}

func TestJournalPolicyEncodingDecodesAsEncodingJSON(t *testing.T) {
	for _, p := range []*Policy{
		{Name: "plain", Rule: []byte(`{"endpointSelector":{}}`), Revision: 7, Imported: created},
		{Name: "sha256:0123<&>\"\\\u2028é\x01", Rule: []byte{}, Imported: time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))},
		{Name: "nil rule"},
	} {
		got, err := appendPolicy(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(p)
		var a, b Policy
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%q: %s does not decode: %v", p.Name, got, err)
		}
		if err := json.Unmarshal(want, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%q: decodes to %+v, encoding/json's to %+v", p.Name, a, b)
		}
	}
}

// TestJournalLargeWriteReplays: a write large enough to be encoded on
// every CPU replays whole, in order.
func TestJournalLargeWriteReplays(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpenJournaled(t, dir)
	journalWrites(t, s, 3)
	mustWrite(t, s, func(txn *memdb.Txn) error {
		for i := range 3 * minParallelChanges {
			if err := PutPolicy(txn, &Policy{Name: fmt.Sprint("big-", i), Rule: []byte(`{}`), Revision: uint64(i), Imported: created}); err != nil {
				return err
			}
		}
		return DeleteNetwork(txn, "n0")
	})
	want := dump(t, s)
	s2, r := mustOpenJournaled(t, dir)
	if r.Replayed != 4 || len(r.Skipped) != 0 {
		t.Fatalf("Restored = %+v, want 4 records", r)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen %d policies, %d networks; want %d, %d", len(got.Policies), len(got.Networks), len(want.Policies), len(want.Networks))
	}
}

// TestJournalReplaysWriteThatReusesAnIndex is the write memdb reports out
// of order: network a moves from index 3 to 4, then b takes index 3, then
// a changes again. memdb lists a once, at its last change (after b), so a replay that puts the objects one
// by one in that order finds index 3 taken. Reopening must restore it, and
// the writes after it.
func TestJournalReplaysWriteThatReusesAnIndex(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpenJournaled(t, dir)
	mustWrite(t, s, func(txn *memdb.Txn) error {
		return PutNetwork(txn, &Network{ID: "a", Index: 3, Created: created})
	})
	mustWrite(t, s, func(txn *memdb.Txn) error {
		if err := PutNetwork(txn, &Network{ID: "a", Index: 4, Created: created}); err != nil {
			return err
		}
		if err := PutNetwork(txn, &Network{ID: "b", Index: 3, Created: created}); err != nil {
			return err
		}
		// a written again: memdb now lists it after b.
		return PutNetwork(txn, &Network{ID: "a", Index: 4, Created: created.Add(time.Second)})
	})
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "after", "reuse") })
	want := dump(t, s)
	s2, r := mustOpenJournaled(t, dir)
	if r.Replayed != 3 || len(r.Skipped) != 0 {
		t.Fatalf("Restored = %+v, want 3 records replayed, nothing skipped", r)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	if n, err := GetNetwork(s2.Read(), "b"); err != nil || n.Index != 3 {
		t.Fatalf("network b: %+v, %v; want index 3", n, err)
	}
}

// TestJournalDirectorySyncedOnFirstOpen: a journal file may exist without
// its directory entry being durable (the process died between creating it
// and fsyncing the directory); the first append of a process must fsync
// the directory all the same.
func TestJournalDirectorySyncedOnFirstOpen(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, journalName(0)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	synced := 0
	syncJournalDir = func(d string) error {
		if d == dir {
			synced++
		}
		return syncDir(d)
	}
	t.Cleanup(func() { syncJournalDir = syncDir })
	s, _ := mustOpenJournaled(t, dir)
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "k", "v") })
	if synced == 0 {
		t.Fatal("the journal was appended to without fsyncing its directory")
	}
}

// TestJournalErrorTellsTornFromLost: a record cut short at the end of the
// file is a torn tail (never acknowledged: Torn, nothing kept); a record
// that fails its checksum in the middle loses acknowledged writes (not
// Torn), and the bytes cut off are kept next to the journal.
func TestJournalErrorTellsTornFromLost(t *testing.T) {
	src := t.TempDir()
	s, _ := mustOpenJournaled(t, src)
	journalWrites(t, s, 4)
	full, err := os.ReadFile(filepath.Join(src, journalName(0)))
	if err != nil {
		t.Fatal(err)
	}
	last := len(full) - lastRecordSize(t, full)

	open := func(image []byte) (string, *JournalError) {
		t.Helper()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, journalName(0)), image, 0o600); err != nil {
			t.Fatal(err)
		}
		_, r := mustOpenJournaled(t, dir)
		var je *JournalError
		if len(r.Skipped) != 1 || !errors.As(r.Skipped[0], &je) {
			t.Fatalf("Skipped = %v, want one *JournalError", r.Skipped)
		}
		return dir, je
	}
	for n := last + 1; n < len(full); n++ {
		dir, je := open(full[:n])
		if !je.Torn || je.Saved != "" {
			t.Fatalf("cut at %d: %+v, want Torn and nothing saved", n, je)
		}
		if cut, _ := filepath.Glob(filepath.Join(dir, "*.cut-*")); len(cut) != 0 {
			t.Fatalf("cut at %d: torn tail kept in %v", n, cut)
		}
	}

	// A bad bit in the second record: the third and fourth were
	// acknowledged.
	_, first, _ := decodeJournalRecord(full)
	bad := slices.Clone(full)
	bad[first+journalHeaderSize+3] ^= 0x10
	dir, je := open(bad)
	want := filepath.Join(dir, journalName(0)+".cut-"+strconv.Itoa(first))
	if je.Torn || je.Offset != int64(first) || je.Saved != want {
		t.Fatalf("%+v, want not Torn, offset %d, saved in %s", je, first, want)
	}
	if kept, err := os.ReadFile(want); err != nil || !bytes.Equal(kept, bad[first:]) {
		t.Fatalf("kept %d bytes (%v), want the %d cut off", len(kept), err, len(bad)-first)
	}
	// A complete last record with a bad checksum may be an acknowledged
	// write: not Torn either.
	bad = slices.Clone(full)
	bad[len(bad)-2] ^= 0x10
	if _, je := open(bad); je.Torn {
		t.Fatalf("%+v: a complete last record gone bad reported as torn", je)
	}
}

// TestJournalCreatedAheadOfTheFirstAppend: once a write has made a
// checkpoint, that checkpoint's journal is created in the background, so
// the next small write only appends (creating it takes three fsyncs);
// what is appended there replays after a reopen.
func TestJournalCreatedAheadOfTheFirstAppend(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpenJournaled(t, dir)
	s.journalMin = 2000
	seq := s.seq
	for i := 0; s.seq == seq; i++ {
		if i == 200 {
			t.Fatal("200 writes made no checkpoint")
		}
		journalWrites(t, s, 1)
	}
	path := filepath.Join(dir, journalName(s.seq))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not created ahead of the first write after its checkpoint", path)
		}
	}
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "after", "checkpoint") })
	want := dump(t, s)
	s2, r := mustOpenJournaled(t, dir)
	if r.Replayed != 1 || len(r.Skipped) != 0 {
		t.Errorf("Restored = %+v, want the one write after the checkpoint replayed", r)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen: %+v, want %+v", got, want)
	}
}
