package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	memdb "github.com/hashicorp/go-memdb"
)

// The journal holds the writes made since a checkpoint, one record per
// write, so that a write costs what it changes rather than the whole state.
// journal-<seq>.log follows checkpoint <seq> (seq 0: the empty state).
const (
	journalPrefix = "journal-"
	journalSuffix = ".log"
	journalMagic  = "MBRJ"
	// journalHeaderSize is magic + payload length + SHA-256.
	journalHeaderSize = len(journalMagic) + 4 + sha256.Size
	// maxJournalRecord bounds a record's payload, so that a corrupt length
	// cannot make Open allocate without limit.
	maxJournalRecord = 1 << 30
	// minJournalBytes is how large the journal may grow before a write
	// checkpoints instead, whatever the size of the last checkpoint.
	minJournalBytes = 4 << 20
)

// ErrCorruptJournal means a journal record failed validation: torn, bad
// magic, checksum mismatch, undecodable, or not applicable to the state
// before it.
var ErrCorruptJournal = errors.New("corrupt journal record")

// JournalError describes the tail of a journal that Open could not replay
// and cut off: the records from Offset on.
type JournalError struct {
	Path   string
	Offset int64
	// Torn is true when the bad record is the end of the file, cut short:
	// an append a crash interrupted, never acknowledged (a warning). When
	// false, a record failed its checksum or did not apply, and the
	// acknowledged writes from there on are lost (an error); the bytes cut
	// off were first copied to Saved.
	Torn bool
	// Saved is the copy of the bytes cut off ("" when Torn, or when the
	// copy failed: Err says why, and the journal is then left as it is).
	Saved string
	Err   error
}

func (e *JournalError) Error() string {
	what := "records from byte %d lost"
	if e.Torn {
		what = "torn record at byte %d cut off"
	}
	msg := fmt.Sprintf("journal %s: "+what+": %v", e.Path, e.Offset, e.Err)
	if e.Saved != "" {
		msg += fmt.Sprintf(" (cut bytes kept in %s)", e.Saved)
	}
	return msg
}

func (e *JournalError) Unwrap() error { return e.Err }

func journalName(seq uint64) string {
	return fmt.Sprintf("%s%0*d%s", journalPrefix, checkpointDigits, seq, journalSuffix)
}

// listJournals returns the sequence numbers of the journal files in dir.
func listJournals(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), journalPrefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		digits, ok := strings.CutSuffix(name, journalSuffix)
		if !ok || len(digits) != checkpointDigits {
			continue
		}
		if seq, err := strconv.ParseUint(digits, 10, 64); err == nil {
			seqs = append(seqs, seq)
		}
	}
	return seqs, nil
}

// journalRecord is the payload of a record: the objects one write put and
// deleted, in the order memdb reports them.
type journalRecord struct {
	Changes []journalChange `json:"changes"`
}

type journalChange struct {
	Table  string          `json:"table"`
	Put    json.RawMessage `json:"put,omitempty"`    // the object as stored
	Delete json.RawMessage `json:"delete,omitempty"` // the object as it was
}

// journalTable decodes and stores the objects of one table.
type journalTable struct {
	decode func([]byte) (any, error)
	put    func(*memdb.Txn, any) error
}

func tableOf[T any](put func(*memdb.Txn, *T) error) journalTable {
	return journalTable{
		decode: func(b []byte) (any, error) {
			obj := new(T)
			if err := json.Unmarshal(b, obj); err != nil {
				return nil, err
			}
			return obj, nil
		},
		put: func(txn *memdb.Txn, obj any) error { return put(txn, obj.(*T)) },
	}
}

// journalTables lists every table a record may name. Objects go in through
// the same helpers as regular writes, so schema constraints hold.
var journalTables = map[string]journalTable{
	TableNetworks:   tableOf(PutNetwork),
	TableEndpoints:  tableOf(PutEndpoint),
	TablePools:      tableOf(PutPool),
	TableAddresses:  tableOf(PutAddress),
	TableMeta:       tableOf(func(txn *memdb.Txn, m *Meta) error { return PutMeta(txn, m.Key, m.Value) }),
	TableIdentities: tableOf(PutIdentity),
	TablePolicies:   tableOf(putPolicyFromDisk),
}

// encodeJournalRecord frames the changes of a write as a record. The
// payload is a journalRecord in JSON, written by hand around the objects'
// own encodings (encoding/json would scan each of them again).
func encodeJournalRecord(changes memdb.Changes) ([]byte, error) {
	parts, err := encodeChanges(changes)
	if err != nil {
		return nil, fmt.Errorf("journal record: %w", err)
	}
	size := journalHeaderSize + 16
	for _, p := range parts {
		size += len(p) + 1
	}
	b := make([]byte, journalHeaderSize, size)
	b = append(b, `{"changes":[`...)
	for i, p := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, p...)
	}
	b = append(b, "]}\n"...)
	payload := b[journalHeaderSize:]
	off := copy(b, journalMagic)
	binary.BigEndian.PutUint32(b[off:], uint32(len(payload)))
	sum := sha256.Sum256(payload)
	copy(b[off+4:], sum[:])
	return b, nil
}

// minParallelChanges is the number of changes from which a record is
// encoded on every CPU (an import of thousands of rules).
const minParallelChanges = 2048

// minChangeSize is less than any change encodes to
// ({"table":"meta","put":{"Key":"","Value":""}} is 45 bytes).
const minChangeSize = 40

// minRecordSize is less than the size of the record encodeJournalRecord
// makes of changes, and close to it for an import of many policy rules
// (their names and rules are most of it): a write whose record cannot fit
// the journal goes to a checkpoint without being encoded first.
func minRecordSize(changes memdb.Changes) int64 {
	n := int64(journalHeaderSize)
	for _, c := range changes {
		n += minChangeSize
		obj := c.After
		if obj == nil {
			obj = c.Before
		}
		if p, ok := obj.(*Policy); ok {
			n += int64(len(p.Name) + base64.StdEncoding.EncodedLen(len(p.Rule)))
		}
	}
	return n
}

// changeSizeHint is about what a change encodes to (a stored rule is some
// 400 bytes in base64): buffers start that large a change.
const changeSizeHint = 512

// encodeChanges encodes changes as non-empty runs of JSON objects
// separated by commas, to be joined with commas.
func encodeChanges(changes memdb.Changes) ([][]byte, error) {
	return encodeChunks(changes, minParallelChanges, func(chunk []memdb.Change, _ bool) ([]byte, error) {
		return appendChanges(make([]byte, 0, len(chunk)*changeSizeHint), chunk)
	})
}

// encodeChunks encodes items as runs of bytes that follow each other: one
// run when they are fewer than minParallel, else a chunk of them per CPU
// (up to 8), encoded side by side, with empty runs left out. encode is
// told whether its chunk comes first.
func encodeChunks[T any](items []T, minParallel int, encode func(chunk []T, first bool) ([]byte, error)) ([][]byte, error) {
	if len(items) < minParallel {
		b, err := encode(items, true)
		return [][]byte{b}, err
	}
	n := min(runtime.GOMAXPROCS(0), 8)
	size := (len(items) + n - 1) / n
	parts := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		chunk := items[min(i*size, len(items)):min((i+1)*size, len(items))]
		wg.Go(func() { parts[i], errs[i] = encode(chunk, i == 0) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(parts, func(p []byte) bool { return len(p) == 0 }), nil
}

func appendChanges(b []byte, changes memdb.Changes) ([]byte, error) {
	for i, c := range changes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"table":`...)
		b = strconv.AppendQuote(b, c.Table)
		obj, op := c.After, `,"put":`
		if obj == nil {
			obj, op = c.Before, `,"delete":`
		}
		b = append(b, op...)
		var err error
		if b, err = appendObject(b, obj); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Table, err)
		}
		b = append(b, '}')
	}
	return b, nil
}

// appendObject appends the JSON of a stored object. Policy rows, which
// imports write by the thousand, are written without reflection; they
// decode as encoding/json's encoding of them does.
func appendObject(b []byte, obj any) ([]byte, error) {
	if p, ok := obj.(*Policy); ok {
		return appendPolicy(b, p)
	}
	raw, err := json.Marshal(obj)
	return append(b, raw...), err
}

// policyRowSize is about what appendPolicy writes for p (exact but for
// an escaped name and the digits of the revision and time), to size
// buffers; never less than len(p.Name) plus the base64 of p.Rule.
func policyRowSize(p *Policy) int {
	return len(p.Name) + base64.StdEncoding.EncodedLen(len(p.Rule)) + 96
}

func appendPolicy(b []byte, p *Policy) ([]byte, error) {
	imported, err := p.Imported.MarshalJSON()
	if err != nil {
		return b, err
	}
	b = append(b, `{"Name":`...)
	b = appendJSONString(b, p.Name)
	if p.Rule == nil {
		b = append(b, `,"Rule":null`...)
	} else {
		b = append(b, `,"Rule":"`...)
		b = base64.StdEncoding.AppendEncode(b, p.Rule)
		b = append(b, '"')
	}
	b = append(b, `,"Revision":`...)
	b = strconv.AppendUint(b, p.Revision, 10)
	b = append(b, `,"Imported":`...)
	b = append(b, imported...)
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string, byte for byte as
// encoding/json writes it: plain printable ASCII as it is, anything else
// (escapes, non-ASCII, and the <, > and & that encoding/json escapes for
// HTML) through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// decodeJournalRecord validates the record at the start of b and returns
// its payload and its size in b.
func decodeJournalRecord(b []byte) (*journalRecord, int, error) {
	if len(b) < journalHeaderSize {
		return nil, 0, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrCorruptJournal, len(b), journalHeaderSize)
	}
	if string(b[:len(journalMagic)]) != journalMagic {
		return nil, 0, fmt.Errorf("%w: bad magic %q", ErrCorruptJournal, b[:len(journalMagic)])
	}
	n := int(binary.BigEndian.Uint32(b[len(journalMagic):]))
	if n > maxJournalRecord || n > len(b)-journalHeaderSize {
		return nil, 0, fmt.Errorf("%w: header says %d payload bytes, %d remain", ErrCorruptJournal, n, len(b)-journalHeaderSize)
	}
	payload := b[journalHeaderSize : journalHeaderSize+n]
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], b[len(journalMagic)+4:journalHeaderSize]) {
		return nil, 0, fmt.Errorf("%w: payload checksum mismatch", ErrCorruptJournal)
	}
	var rec journalRecord
	if err := json.Unmarshal(payload, &rec); err != nil {
		return nil, 0, fmt.Errorf("%w: payload: %v", ErrCorruptJournal, err)
	}
	return &rec, journalHeaderSize + n, nil
}

// decodedChange is a journalChange with its object decoded.
type decodedChange struct {
	table string
	t     journalTable
	obj   any
	put   bool
}

func (rec *journalRecord) decode() ([]decodedChange, error) {
	out := make([]decodedChange, len(rec.Changes))
	for i, c := range rec.Changes {
		t, ok := journalTables[c.Table]
		if !ok {
			return nil, fmt.Errorf("change %d: unknown table %q", i, c.Table)
		}
		raw, isPut := c.Put, true
		if raw == nil {
			raw, isPut = c.Delete, false
		}
		if raw == nil || (isPut && c.Delete != nil) {
			return nil, fmt.Errorf("change %d: want exactly one of put and delete", i)
		}
		obj, err := t.decode(raw)
		if err != nil {
			return nil, fmt.Errorf("change %d: %s: %v", i, c.Table, err)
		}
		out[i] = decodedChange{table: c.Table, t: t, obj: obj, put: isPut}
	}
	return out, nil
}

// apply makes the record's changes in txn. A record holds the state each
// object was left in by the write, not the order the write changed them in
// (memdb reports an object changed twice once, where it last changed): put
// one at a time, a valid write such as "network a moves from index 3 to 4,
// then b takes 3" would conflict with itself. So every object the record
// names is taken out first, then those put go back in through the regular
// helpers, whose constraints thereby check the state after the write.
func (rec *journalRecord) apply(txn *memdb.Txn) error {
	changes, err := rec.decode()
	if err != nil {
		return err
	}
	for i, c := range changes {
		err := txn.Delete(c.table, c.obj)
		if errors.Is(err, memdb.ErrNotFound) && c.put {
			continue // a new object
		}
		if err != nil {
			return fmt.Errorf("change %d: %s: %v", i, c.table, err)
		}
	}
	for i, c := range changes {
		if !c.put {
			continue
		}
		if err := c.t.put(txn, c.obj); err != nil {
			return fmt.Errorf("change %d: %s: %v", i, c.table, err)
		}
	}
	return nil
}

// replayJournal applies the records of journal-<seq> to db, in order, up to
// the first that fails validation or does not apply; that record and the
// rest of the file are reported, not applied. It counts the records
// applied in *replayed and returns the length of the valid prefix (0 when
// there is no journal) and the error of the tail.
func replayJournal(db *memdb.MemDB, replayed *int, dir string, seq uint64) (int64, *JournalError, error) {
	path := filepath.Join(dir, journalName(seq))
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read journal: %w", err)
	}
	off := 0
	for off < len(b) {
		rec, n, err := decodeJournalRecord(b[off:])
		if err == nil {
			err = applyRecord(db, rec)
		}
		if err != nil {
			return int64(off), cutJournal(path, b, off, err), nil
		}
		off += n
		*replayed++
	}
	return int64(off), nil, nil
}

// cutJournal reports the bad record at off of the journal b read from path.
// Unless it is a torn tail, the writes from there on were acknowledged: the
// bytes are copied next to the journal (<journal>.cut-<off>) before the
// next append cuts them off.
func cutJournal(path string, b []byte, off int, err error) *JournalError {
	je := &JournalError{Path: path, Offset: int64(off), Torn: incompleteRecord(b[off:]), Err: err}
	if je.Torn {
		return je
	}
	dir, name := filepath.Split(path)
	saved := fmt.Sprintf("%s.cut-%d", name, off)
	if _, serr := writeFileDurable(filepath.Clean(dir), saved, b[off:]); serr != nil {
		je.Err = errors.Join(err, fmt.Errorf("%w: keep the bytes cut off: %v", errKeepJournal, serr))
		return je
	}
	je.Saved = filepath.Join(dir, saved)
	return je
}

// syncJournalDir is syncDir; tests count the calls.
var syncJournalDir = syncDir

// errKeepJournal marks a JournalError whose cut bytes could not be saved:
// the journal must not be cut.
var errKeepJournal = errors.New("journal left uncut")

// incompleteRecord reports whether b, the bytes from a bad record to the
// end of the file, is the start of a record cut short: what a crash in the
// middle of an append leaves. A complete record that fails its checksum is
// not, even at the end: it may be an acknowledged write gone bad.
func incompleteRecord(b []byte) bool {
	m := min(len(b), len(journalMagic))
	if string(b[:m]) != journalMagic[:m] {
		return false
	}
	if len(b) < journalHeaderSize {
		return true
	}
	n := binary.BigEndian.Uint32(b[len(journalMagic):])
	return n <= maxJournalRecord && int(n) > len(b)-journalHeaderSize
}

// applyRecord applies a record in a transaction of its own: all of it, or,
// with an error, none of it.
func applyRecord(db *memdb.MemDB, rec *journalRecord) error {
	txn := db.Txn(true)
	defer txn.Abort()
	if err := rec.apply(txn); err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptJournal, err)
	}
	txn.Commit()
	return nil
}

// journal is the open journal file the store appends to.
type journal struct {
	f    *os.File
	size int64 // bytes of valid records
}

// openJournal opens journal-<seq> for appending, cutting it to size (the
// valid records) and creating it if needed. The directory is fsynced every
// time, not only when the file is new: a process that died between
// creating it and fsyncing the directory left a file whose entry may not
// survive a crash, and appends to it would be acknowledged all the same.
// It is one fsync per journal a process opens.
func openJournal(dir string, seq uint64, size int64) (*journal, error) {
	return openJournalFile(dir, seq, os.O_RDWR|os.O_CREATE, size)
}

// createJournal creates the empty journal of checkpoint seq, durably, and
// fails if the file exists already: unlike openJournal it never cuts
// records another opener may have written.
func createJournal(dir string, seq uint64) (*journal, error) {
	return openJournalFile(dir, seq, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0)
}

// openJournalFile opens the journal of checkpoint seq with flags, cuts it
// to size (a no-op for a file just created), and makes it and its
// directory entry durable.
func openJournalFile(dir string, seq uint64, flags int, size int64) (*journal, error) {
	f, err := os.OpenFile(filepath.Join(dir, journalName(seq)), flags, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncJournalDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &journal{f: f, size: size}, nil
}

// append writes a record and fsyncs it. If that fails, the file is cut back
// to its valid records, so that the failed record is never replayed; if
// even that fails, broken is set and the journal must not be used again.
func (j *journal) append(rec []byte) (broken bool, err error) {
	_, err = j.f.WriteAt(rec, j.size)
	if err == nil {
		err = j.f.Sync()
	}
	if err == nil {
		j.size += int64(len(rec))
		return false, nil
	}
	if terr := j.f.Truncate(j.size); terr != nil {
		return true, errors.Join(err, terr)
	}
	if serr := j.f.Sync(); serr != nil {
		return true, errors.Join(err, serr)
	}
	return false, err
}

// linkedAt reports whether the open file is still the one at path.
func (j *journal) linkedAt(path string) bool {
	open, err := j.f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Stat(path)
	return err == nil && os.SameFile(open, named)
}

func (j *journal) close() error { return j.f.Close() }
