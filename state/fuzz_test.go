package state

import (
	"crypto/sha256"
	"encoding/binary"
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
			again, err := encodeCheckpoint(db.Txn(false))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeCheckpoint(again); err != nil {
				t.Fatalf("re-encoded checkpoint does not load: %v", err)
			}
		}
	})
}
