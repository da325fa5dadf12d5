package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// checkpointImage is encodeCheckpoint joined into one file image.
func checkpointImage(txn *memdb.Txn) ([]byte, error) {
	parts, size, err := encodeCheckpoint(txn)
	if err != nil {
		return nil, err
	}
	b := bytes.Join(parts, nil)
	if int64(len(b)) != size {
		return nil, fmt.Errorf("encodeCheckpoint: size %d, parts hold %d bytes", size, len(b))
	}
	return b, nil
}

// TestCheckpointPayloadDecodesAsEncodingJSON: the hand-written checkpoint
// payload is byte for byte what encoding/json's encoder writes for the
// same tables (and so decodes to the same), with no policy rows, a few,
// and enough to be encoded on every CPU.
func TestCheckpointPayloadDecodesAsEncodingJSON(t *testing.T) {
	for _, n := range []int{0, 1, 3, 2*minParallelPolicies + 7} {
		t.Run(fmt.Sprint(n, " policies"), func(t *testing.T) {
			s, _ := mustOpen(t, t.TempDir())
			fill(t, s)
			if n == 0 {
				mustWrite(t, s, func(txn *memdb.Txn) error {
					rows, _ := ListPolicies(txn)
					for _, r := range rows {
						if err := DeletePolicy(txn, r.Name); err != nil {
							return err
						}
					}
					return nil
				})
			}
			mustWrite(t, s, func(txn *memdb.Txn) error {
				for i := range n {
					// Names that encoding/json escapes: for HTML only, and
					// beyond ASCII too.
					name := fmt.Sprintf("p-%05d<&>", i)
					if i%2 == 1 {
						name += "\u2028"
					}
					p := &Policy{Name: name, Rule: []byte(fmt.Sprintf(`{"n":%d}`, i)), Revision: uint64(i), Imported: time.Unix(int64(i), 5).UTC()}
					if err := PutPolicy(txn, p); err != nil {
						return err
					}
				}
				return nil
			})
			var data checkpointData
			txn := s.Read()
			data.Networks, _ = ListNetworks(txn)
			data.Endpoints, _ = ListEndpoints(txn)
			data.Pools, _ = ListPools(txn)
			data.Addresses, _ = ListAddresses(txn)
			data.Meta, _ = ListMeta(txn)
			data.Identities, _ = ListIdentities(txn)
			data.Policies, _ = ListPolicies(txn)
			parts, err := encodeCheckpointPayload(&data)
			if err != nil {
				t.Fatal(err)
			}
			got := bytes.Join(parts, nil)
			want, err := json.Marshal(&data)
			if err != nil {
				t.Fatal(err)
			}
			if want := append(want, '\n'); !bytes.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Errorf("payload differs from encoding/json's at byte %d: %.80q, want %.80q", i, got[i:], want[i:])
			}
			var a, b checkpointData
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("payload does not decode: %v\n%.400s", err, got)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("payload decodes to %+v,\nencoding/json's to %+v", a, b)
			}
			img, err := checkpointImage(txn)
			if err != nil {
				t.Fatal(err)
			}
			db, err := decodeCheckpoint(img)
			if err != nil {
				t.Fatalf("checkpoint does not load: %v", err)
			}
			if rows, _ := ListPolicies(db.Txn(false)); len(rows) != len(data.Policies) {
				t.Errorf("checkpoint loads %d policies, want %d", len(rows), len(data.Policies))
			}
		})
	}
}

// TestPolicyNameIndexIsStringFieldIndex: the policies' id index gives the
// keys memdb.StringFieldIndex{Field: "Name"} gives, which it replaced.
func TestPolicyNameIndexIsStringFieldIndex(t *testing.T) {
	want := &memdb.StringFieldIndex{Field: "Name"}
	for _, name := range []string{"", "web", "sha256:0123", "é\x00x"} {
		p := &Policy{Name: name, Rule: []byte("{}")}
		ok1, k1, err1 := policyNameIndex{}.FromObject(p)
		ok2, k2, err2 := want.FromObject(p)
		if ok1 != ok2 || !bytes.Equal(k1, k2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("FromObject(%q) = %v %q %v, StringFieldIndex %v %q %v", name, ok1, k1, err1, ok2, k2, err2)
		}
		a1, err1 := policyNameIndex{}.FromArgs(name)
		a2, err2 := want.FromArgs(name)
		if !bytes.Equal(a1, a2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("FromArgs(%q) = %q %v, StringFieldIndex %q %v", name, a1, err1, a2, err2)
		}
		p1, err1 := policyNameIndex{}.PrefixFromArgs(name)
		p2, err2 := want.PrefixFromArgs(name)
		if !bytes.Equal(p1, p2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("PrefixFromArgs(%q) = %q %v, StringFieldIndex %q %v", name, p1, err1, p2, err2)
		}
	}
	if _, _, err := (policyNameIndex{}).FromObject(&Meta{Key: "k"}); err == nil {
		t.Error("FromObject of a *Meta: no error")
	}
}

// TestMinRecordSizeIsALowerBound: the estimate that sends a write too
// large for the journal to a checkpoint, unencoded, never exceeds the
// record's size, and is close to it for a write of many policy rules.
func TestMinRecordSizeIsALowerBound(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir())
	fill(t, s)
	for _, n := range []int{0, 1, 50} {
		txn := s.db.Txn(true)
		txn.TrackChanges()
		for i := range n {
			name := fmt.Sprintf("rule-%d\u2028<&>\x01", i)
			if err := PutPolicy(txn, &Policy{Name: name, Rule: []byte(fmt.Sprintf(`{"endpointSelector":{"matchLabels":{"app":"a%d"}}}`, i)), Revision: 1 << 40, Imported: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		if err := PutMeta(txn, "k", "v"); err != nil {
			t.Fatal(err)
		}
		rows, _ := ListNetworks(txn)
		for _, r := range rows {
			if err := DeleteNetwork(txn, r.ID); err != nil {
				t.Fatal(err)
			}
		}
		changes := txn.Changes()
		rec, err := encodeJournalRecord(changes)
		if err != nil {
			t.Fatal(err)
		}
		if est := minRecordSize(changes); est > int64(len(rec)) {
			t.Errorf("%d policies: estimate %d, record %d bytes", n, est, len(rec))
		} else if n == 50 && est < int64(len(rec))/2 {
			t.Errorf("%d policies: estimate %d, far below the record's %d bytes", n, est, len(rec))
		}
		txn.Abort()
	}
}

// waitPruned waits until the background deletion of old checkpoints and
// journals is done.
func (s *Store) waitPruned() { s.pruning.Wait() }

// TestPruneRetriesWhatItCouldNotDelete: old checkpoints are deleted in the
// background; one that cannot be deleted is tried again after the next
// checkpoint.
func TestPruneRetriesWhatItCouldNotDelete(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	for i := range 3 {
		mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "counter", fmt.Sprint(i)) })
	}
	// Checkpoint 1 cannot be deleted: it became a directory with a file.
	first := filepath.Join(dir, checkpointName(1))
	if err := os.Remove(first); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(first, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "counter", "3") })
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("the undeletable checkpoint: %v", err)
	}
	if err := os.Remove(filepath.Join(first, "x")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "counter", "4") })
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoint 1 not deleted on the next try: %v", err)
	}
	if got, want := checkpointFiles(t, dir), []string{checkpointName(3), checkpointName(4), checkpointName(5)}; !reflect.DeepEqual(got, want) {
		t.Errorf("checkpoint files = %v, want %v", got, want)
	}
}
