package state

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// reframe fixes the length and checksum of a checkpoint image so the fuzzer
// also reaches the payload decoder.
func reframe(b []byte) []byte {
	if len(b) < checkpointHeaderSize {
		return b
	}
	payload := b[checkpointHeaderSize:]
	off := len(checkpointMagic) + 4
	binary.BigEndian.PutUint64(b[off:], uint64(len(payload)))
	sum := sha256.Sum256(payload)
	copy(b[off+8:], sum[:])
	return b
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(`{"networks":[{"ID":"a","Index":1,"IPv4":{"Pool":"10.0.0.0/24","Gateway":"10.0.0.1"}}],"pools":[{"ID":"p","AddressSpace":"s","Prefix":"fd00::/64"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"addresses":[{"Key":"p|10.0.0.1","PoolID":"p","Addr":"10.0.0.1"}]}`))
	f.Add([]byte(`{"endpoints":[{"ID":"e","NetworkID":"n","ContainerID":"c","Labels":{"app":"web"},"Identity":256}],` +
		`"identities":[{"ID":256,"Key":"app=web","Labels":{"app":"web"}},{"ID":257,"Key":""}],"policies":[{"Name":"p","Rule":"e30="}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		b := frame(payload)
		db, err := decodeCheckpoint(b)
		if (db == nil) == (err == nil) {
			t.Fatalf("decodeCheckpoint = %v, %v: want exactly one of database and error", db != nil, err)
		}
		if db != nil {
			// Whatever loads must encode and load again.
			again, err := checkpointImage(db.Txn(false))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeCheckpoint(again); err != nil {
				t.Fatalf("re-encoded checkpoint does not load: %v", err)
			}
		}
	})
}

// FuzzDecodeJournalRecord replays arbitrary journal images: replay must
// stop at the first bad record without panicking, and whatever replays
// must survive a checkpoint round trip.
func FuzzDecodeJournalRecord(f *testing.F) {
	put := func(table, obj string) []byte {
		return frameRecord([]byte(`{"changes":[{"table":"` + table + `","put":` + obj + `}]}`))
	}
	f.Add(put(TableMeta, `{"Key":"k","Value":"v"}`))
	f.Add(append(put(TablePolicies, `{"Name":"p","Rule":"e30="}`), frameRecord([]byte(`{"changes":[{"table":"policies","delete":{"Name":"p"}}]}`))...))
	f.Add(put(TableIdentities, `{"ID":256,"Key":"app=web","Labels":{"app":"web"}}`))
	f.Add(frameRecord([]byte(`{"changes":[{"table":"networks","put":{"ID":"a","Index":1},"delete":{"ID":"a"}}]}`)))
	f.Add([]byte(journalMagic + "\x00\x00\x00\x02"))
	f.Fuzz(func(t *testing.T, image []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, journalName(0)), image, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := newDB()
		if err != nil {
			t.Fatal(err)
		}
		var replayed int
		valid, tail, err := replayJournal(db, &replayed, dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		if (tail == nil) != (valid == int64(len(image))) {
			t.Fatalf("valid prefix %d of %d bytes, tail error %v", valid, len(image), tail)
		}
		b, err := checkpointImage(db.Txn(false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeCheckpoint(b); err != nil {
			t.Fatalf("replayed state does not survive a checkpoint: %v", err)
		}
	})
}

// frameRecord frames a payload as a journal record.
func frameRecord(payload []byte) []byte {
	b := make([]byte, journalHeaderSize, journalHeaderSize+len(payload))
	copy(b, journalMagic)
	binary.BigEndian.PutUint32(b[len(journalMagic):], uint32(len(payload)))
	sum := sha256.Sum256(payload)
	copy(b[len(journalMagic)+4:], sum[:])
	return append(b, payload...)
}
