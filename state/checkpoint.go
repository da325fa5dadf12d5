package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	memdb "github.com/hashicorp/go-memdb"
)

const (
	checkpointMagic   = "MEMBRANE"
	checkpointVersion = uint32(1)
	// checkpointHeaderSize is magic + version + payload length + SHA-256.
	checkpointHeaderSize = len(checkpointMagic) + 4 + 8 + sha256.Size

	checkpointPrefix = "checkpoint-"
	checkpointSuffix = ".ckpt"
	checkpointDigits = 20 // enough for any uint64
	tempPattern      = ".checkpoint-*.tmp"

	// checkpointsKept is how many checkpoint files survive a write.
	checkpointsKept = 3
)

// checkpointData is the payload of a checkpoint: every table, each sorted by
// primary key. New tables are added as new fields, which keeps the format
// version: a checkpoint written before a table existed lacks its field and
// loads with that table empty (identities and policies arrived this way).
type checkpointData struct {
	Networks   []*Network  `json:"networks"`
	Endpoints  []*Endpoint `json:"endpoints"`
	Pools      []*Pool     `json:"pools"`
	Addresses  []*Address  `json:"addresses"`
	Meta       []*Meta     `json:"meta"`
	Identities []*Identity `json:"identities"`
	Policies   []*Policy   `json:"policies"`
}

func checkpointName(seq uint64) string {
	return fmt.Sprintf("%s%0*d%s", checkpointPrefix, checkpointDigits, seq, checkpointSuffix)
}

// parseCheckpointName returns the sequence number of a checkpoint file name.
func parseCheckpointName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, checkpointPrefix) || !strings.HasSuffix(name, checkpointSuffix) {
		return 0, false
	}
	digits := strings.TrimSuffix(strings.TrimPrefix(name, checkpointPrefix), checkpointSuffix)
	if len(digits) != checkpointDigits {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return seq, true
}

// listCheckpoints returns the sequence numbers of the checkpoint files in
// dir, oldest first.
func listCheckpoints(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if seq, ok := parseCheckpointName(e.Name()); ok {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// removeTempFiles deletes temporary files a crash left behind mid-write.
func removeTempFiles(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, tempPattern))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("leftover temporary file: %w", err)
		}
	}
	return nil
}

// encodeCheckpoint serializes every table readable through txn into a
// complete checkpoint file image (header and payload), as the parts to
// write one after the other: a state of many policy rules makes a
// checkpoint of many megabytes, which is not copied into one buffer.
func encodeCheckpoint(txn *memdb.Txn) ([][]byte, int64, error) {
	var data checkpointData
	var err error
	if data.Networks, err = ListNetworks(txn); err != nil {
		return nil, 0, err
	}
	if data.Endpoints, err = ListEndpoints(txn); err != nil {
		return nil, 0, err
	}
	if data.Pools, err = ListPools(txn); err != nil {
		return nil, 0, err
	}
	if data.Addresses, err = ListAddresses(txn); err != nil {
		return nil, 0, err
	}
	if data.Meta, err = ListMeta(txn); err != nil {
		return nil, 0, err
	}
	if data.Identities, err = ListIdentities(txn); err != nil {
		return nil, 0, err
	}
	if data.Policies, err = ListPolicies(txn); err != nil {
		return nil, 0, err
	}
	parts, err := encodeCheckpointPayload(&data)
	if err != nil {
		return nil, 0, fmt.Errorf("checkpoint payload: %w", err)
	}
	h := sha256.New()
	var n int64
	for _, p := range parts {
		h.Write(p)
		n += int64(len(p))
	}
	header := make([]byte, checkpointHeaderSize)
	off := copy(header, checkpointMagic)
	binary.BigEndian.PutUint32(header[off:], checkpointVersion)
	off += 4
	binary.BigEndian.PutUint64(header[off:], uint64(n))
	off += 8
	h.Sum(header[off:off])
	return append([][]byte{header}, parts...), int64(checkpointHeaderSize) + n, nil
}

// minParallelPolicies is the number of policy rows from which a
// checkpoint encodes them on every CPU.
const minParallelPolicies = 2048

// encodeCheckpointPayload encodes data as encoding/json encodes a
// checkpointData (and as decodeCheckpoint reads it), in parts to be
// written in order. The policy rows, which are most of a large state, are
// written without reflection (appendPolicy), on every CPU when they are
// many; the other tables go through encoding/json.
func encodeCheckpointPayload(data *checkpointData) ([][]byte, error) {
	var head []byte
	field := func(name string, v any) error {
		if len(head) == 0 {
			head = append(head, '{')
		} else {
			head = append(head, ',')
		}
		head = strconv.AppendQuote(head, name)
		head = append(head, ':')
		b, err := json.Marshal(v)
		head = append(head, b...)
		return err
	}
	for _, f := range []struct {
		name string
		v    any
	}{
		{"networks", data.Networks}, {"endpoints", data.Endpoints}, {"pools", data.Pools},
		{"addresses", data.Addresses}, {"meta", data.Meta}, {"identities", data.Identities},
	} {
		if err := field(f.name, f.v); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	head = append(head, `,"policies":`...)
	if data.Policies == nil {
		head = append(head, "null}\n"...)
		return [][]byte{head}, nil
	}
	head = append(head, '[')
	rows, err := encodePolicyRows(data.Policies)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	parts := append([][]byte{head}, rows...)
	return append(parts, []byte("]}\n")), nil
}

// encodePolicyRows encodes policy rows as non-empty runs of JSON objects
// that join into a comma-separated list: every run but the first starts
// with a comma.
func encodePolicyRows(rows []*Policy) ([][]byte, error) {
	return encodeChunks(rows, minParallelPolicies, func(chunk []*Policy, first bool) ([]byte, error) {
		size := 0
		for _, p := range chunk {
			size += policyRowSize(p)
		}
		b := make([]byte, 0, size+len(chunk))
		var err error
		for i, p := range chunk {
			if i > 0 || !first {
				b = append(b, ',')
			}
			if b, err = appendPolicy(b, p); err != nil {
				return nil, fmt.Errorf("policy %q: %w", p.Name, err)
			}
		}
		return b, nil
	})
}

// decodeCheckpoint validates a checkpoint file image and loads it into a new
// database. Nothing is returned unless every check passes and every object
// was inserted.
func decodeCheckpoint(b []byte) (*memdb.MemDB, error) {
	if len(b) < checkpointHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrCorruptCheckpoint, len(b), checkpointHeaderSize)
	}
	if string(b[:len(checkpointMagic)]) != checkpointMagic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrCorruptCheckpoint, b[:len(checkpointMagic)])
	}
	off := len(checkpointMagic)
	if v := binary.BigEndian.Uint32(b[off:]); v != checkpointVersion {
		return nil, fmt.Errorf("%w: unsupported format version %d (this build reads version %d)", ErrCorruptCheckpoint, v, checkpointVersion)
	}
	off += 4
	n := binary.BigEndian.Uint64(b[off:])
	off += 8
	if have := uint64(len(b) - checkpointHeaderSize); n != have {
		return nil, fmt.Errorf("%w: header says %d payload bytes, file has %d", ErrCorruptCheckpoint, n, have)
	}
	want := b[off : off+sha256.Size]
	payload := b[checkpointHeaderSize:]
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], want) {
		return nil, fmt.Errorf("%w: payload checksum mismatch", ErrCorruptCheckpoint)
	}

	var data checkpointData
	if err := json.Unmarshal(payload, &data); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrCorruptCheckpoint, err)
	}
	db, err := newDB()
	if err != nil {
		return nil, err
	}
	txn := db.Txn(true)
	defer txn.Abort()
	if err := loadTables(txn, &data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptCheckpoint, err)
	}
	txn.Commit()
	return db, nil
}

// loadTables inserts a checkpoint's objects through the same helpers that
// regular writes use, so that every schema constraint is checked again.
func loadTables(txn *memdb.Txn, data *checkpointData) error {
	for i, n := range data.Networks {
		if n == nil {
			return fmt.Errorf("network %d is null", i)
		}
		if err := PutNetwork(txn, n); err != nil {
			return err
		}
	}
	for i, e := range data.Endpoints {
		if e == nil {
			return fmt.Errorf("endpoint %d is null", i)
		}
		if err := PutEndpoint(txn, e); err != nil {
			return err
		}
	}
	for i, p := range data.Pools {
		if p == nil {
			return fmt.Errorf("pool %d is null", i)
		}
		if err := PutPool(txn, p); err != nil {
			return err
		}
	}
	for i, a := range data.Addresses {
		if a == nil {
			return fmt.Errorf("address %d is null", i)
		}
		if err := PutAddress(txn, a); err != nil {
			return err
		}
	}
	for i, m := range data.Meta {
		if m == nil {
			return fmt.Errorf("meta %d is null", i)
		}
		if err := PutMeta(txn, m.Key, m.Value); err != nil {
			return err
		}
	}
	for i, id := range data.Identities {
		if id == nil {
			return fmt.Errorf("identity %d is null", i)
		}
		if _, err := GetIdentity(txn, id.ID); err == nil {
			return fmt.Errorf("identity %d appears twice", id.ID)
		}
		if err := PutIdentity(txn, id); err != nil {
			return err
		}
	}
	for i, p := range data.Policies {
		if p == nil {
			return fmt.Errorf("policy %d is null", i)
		}
		if _, err := GetPolicy(txn, p.Name); err == nil {
			return fmt.Errorf("policy %q appears twice", p.Name)
		}
		if err := putPolicyFromDisk(txn, p); err != nil {
			return err
		}
	}
	return nil
}

// writeFileDurable writes b to dir/name atomically: a temporary file in dir
// is written and fsynced, renamed over name, and dir is fsynced.
// renamed reports whether the new file may have replaced name, even when an
// error is returned.
func writeFileDurable(dir, name string, b []byte) (renamed bool, err error) {
	return writePartsDurable(dir, name, [][]byte{b})
}

// writePartsDurable is writeFileDurable for the concatenation of parts.
func writePartsDurable(dir, name string, parts [][]byte) (renamed bool, err error) {
	f, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer func() {
		if !renamed {
			os.Remove(tmp) // best effort; Open removes leftovers too
		}
	}()
	for _, b := range parts {
		if _, err := f.Write(b); err != nil {
			f.Close()
			return false, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp, final); err != nil {
		return false, err
	}
	if err := syncDir(dir); err != nil {
		return true, err
	}
	return true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
