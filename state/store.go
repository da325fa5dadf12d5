package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	memdb "github.com/hashicorp/go-memdb"
)

// Store is the database plus its checkpoint directory.
type Store struct {
	dir string

	// mu serializes writers, so records and checkpoints are written in
	// commit order; it guards everything below.
	mu    sync.Mutex
	db    *memdb.MemDB
	seq   uint64   // sequence number of the newest checkpoint file on disk
	files []uint64 // sequence numbers of checkpoint files on disk, oldest first

	// The journal of checkpoint seq: appendable unless the state was not
	// loaded from checkpoint seq (a newer checkpoint was corrupt), in
	// which case the next write checkpoints. journal is opened on the first
	// append, or ahead of it (nextJournal, see openNextJournal);
	// journalSize is the length of its valid records.
	appendable     bool
	journal        *journal
	nextJournal    chan openedJournal
	journalSize    int64
	checkpointSize int64 // bytes of checkpoint seq
	// journalMin is how large the journal may grow before a write
	// checkpoints, however small the last checkpoint (minJournalBytes).
	journalMin int64
	// checkpointEveryWrite turns the journal off (tests of checkpoints).
	checkpointEveryWrite bool

	// Old checkpoints and journals are deleted in the background (see
	// prune): pruning tracks that; lastPrune is closed when the latest
	// prune is done (each waits for the one before, so that one that
	// could not delete a checkpoint has said so before the next decides
	// which journals go; guarded by mu); pruneMu guards undeleted, the
	// checkpoints a prune could not delete (to try again).
	pruning   sync.WaitGroup
	lastPrune chan struct{}
	pruneMu   sync.Mutex
	undeleted []uint64
}

// Restored tells what Open loaded.
type Restored struct {
	// Path is the checkpoint that was loaded, "" when the store started
	// empty.
	Path string
	// Replayed counts the journal records applied on top of Path.
	Replayed int
	// Skipped holds one *CheckpointError for every checkpoint newer than
	// Path that could not be loaded, newest first, then a *JournalError
	// if the journal ended in records that could not be replayed: a write
	// torn by a crash, never acknowledged (JournalError.Torn), or a
	// corrupt record, with the acknowledged writes from there on lost.
	Skipped []error
}

// Open opens the store kept in dir, creating dir (mode 0700) if it is
// missing, and loads the newest valid checkpoint and the journal of writes
// made after it. Corrupt checkpoints are skipped and reported in Restored,
// as is starting empty because none was valid; a journal is replayed up to
// its first invalid record, and the rest is reported and cut off. Open
// fails only when dir itself cannot be used.
func Open(dir string) (*Store, Restored, error) {
	var r Restored
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, r, fmt.Errorf("state directory: %w", err)
	}
	if err := removeTempFiles(dir); err != nil {
		return nil, r, fmt.Errorf("state directory %s: %w", dir, err)
	}
	seqs, err := listCheckpoints(dir)
	if err != nil {
		return nil, r, fmt.Errorf("state directory: %w", err)
	}

	s := &Store{dir: dir, files: seqs, journalMin: minJournalBytes}
	if len(seqs) > 0 {
		s.seq = seqs[len(seqs)-1]
	}
	loaded, ok := uint64(0), len(seqs) == 0
	for i := len(seqs) - 1; i >= 0 && !ok; i-- {
		path := filepath.Join(dir, checkpointName(seqs[i]))
		db, size, err := readCheckpoint(path)
		if err != nil {
			r.Skipped = append(r.Skipped, &CheckpointError{Path: path, Err: err})
			continue
		}
		s.db, s.checkpointSize, r.Path = db, size, path
		loaded, ok = seqs[i], true
	}
	if s.db == nil {
		if s.db, err = newDB(); err != nil {
			return nil, r, err
		}
	}
	if !ok {
		return s, r, nil // no journal applies to an empty state
	}
	valid, tail, err := replayJournal(s.db, &r.Replayed, dir, loaded)
	if err != nil {
		return nil, r, fmt.Errorf("state directory: %w", err)
	}
	if tail != nil {
		r.Skipped = append(r.Skipped, tail)
	}
	// Writes go on in this journal only when it follows the newest
	// checkpoint, and when cutting its tail destroys nothing unsaved;
	// otherwise the next write checkpoints.
	s.appendable = loaded == s.seq && (tail == nil || !errors.Is(tail, errKeepJournal))
	s.journalSize = valid
	return s, r, nil
}

func readCheckpoint(path string) (*memdb.MemDB, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	db, err := decodeCheckpoint(b)
	return db, int64(len(b)), err
}

func newDB() (*memdb.MemDB, error) {
	db, err := memdb.NewMemDB(Schema())
	if err != nil {
		return nil, fmt.Errorf("state schema: %w", err)
	}
	return db, nil
}

// Dir returns the checkpoint directory.
func (s *Store) Dir() string { return s.dir }

// Read returns a read-only transaction: a consistent snapshot that later
// writes do not change. It never blocks.
func (s *Store) Read() *memdb.Txn {
	return s.db.Txn(false)
}

// Write runs fn in a write transaction. If fn returns an error the
// transaction is aborted and the error returned. Otherwise the change is
// made durable and then committed, before Write returns: appended to the
// journal as one record (fsynced), or, once the journal has grown as large
// as the last checkpoint, written with the whole state as a new checkpoint
// that starts a new journal. If that fails, the transaction is aborted and
// an error returned, so nothing changed, in memory or on disk.
//
// Writes are serialized. fn must not call Write (it would deadlock) and must
// not keep txn after it returns.
func (s *Store) Write(fn func(txn *memdb.Txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	txn := s.db.Txn(true)
	defer txn.Abort() // no-op after Commit
	txn.TrackChanges()
	if err := fn(txn); err != nil {
		return err
	}
	changes := txn.Changes()
	if len(changes) == 0 {
		return nil
	}
	journaled, err := s.appendRecord(changes)
	if err != nil {
		return err
	}
	if !journaled {
		if err := s.checkpoint(txn.Snapshot()); err != nil {
			return err
		}
	}
	txn.Commit()
	return nil
}

// appendRecord appends the changes to the journal, and reports false when
// they belong in a checkpoint instead: the journal cannot be used, or
// would outgrow the checkpoint it follows (replaying it at start would
// then cost more than loading a checkpoint). s.mu must be held.
func (s *Store) appendRecord(changes memdb.Changes) (bool, error) {
	if !s.appendable || s.checkpointEveryWrite {
		return false, nil
	}
	limit := max(s.journalMin, s.checkpointSize)
	if s.journalSize+minRecordSize(changes) > limit {
		return false, nil // too large for sure: spare the encoding
	}
	rec, err := encodeJournalRecord(changes)
	if err != nil {
		return false, err
	}
	if s.journalSize+int64(len(rec)) > limit {
		return false, nil
	}
	if s.journal == nil {
		s.journal = s.takeNextJournal(s.seq, s.journalSize)
	}
	if s.journal != nil && !s.journal.linkedAt(filepath.Join(s.dir, journalName(s.seq))) {
		// Removed or replaced under us: appends would go to a file the
		// next Open never reads. A checkpoint says whether the directory
		// can still be written.
		s.closeJournal()
		s.appendable = false
		return false, nil
	}
	if s.journal == nil {
		j, err := openJournal(s.dir, s.seq, s.journalSize)
		if err != nil {
			return false, fmt.Errorf("journal %s: %w", filepath.Join(s.dir, journalName(s.seq)), err)
		}
		s.journal = j
	}
	broken, err := s.journal.append(rec)
	s.journalSize = s.journal.size
	if broken {
		// The failed record may be on disk: never append after it. The
		// next write checkpoints, which supersedes this journal.
		s.closeJournal()
		s.appendable = false
	}
	if err != nil {
		return false, fmt.Errorf("journal %s: %w", filepath.Join(s.dir, journalName(s.seq)), err)
	}
	return true, nil
}

// Close waits for the store's work in the background (deleting old
// checkpoints, creating the next journal) and closes its journal. Every
// write is durable already; the store is not to be used after.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeJournal()
	s.appendable = false
	s.pruning.Wait()
	return nil
}

func (s *Store) closeJournal() {
	if s.journal != nil {
		s.journal.close() // its records are fsynced already
		s.journal = nil
	}
	if s.nextJournal != nil {
		if o := <-s.nextJournal; o.j != nil {
			o.j.close()
		}
		s.nextJournal = nil
	}
}

// openedJournal is a journal opened ahead of its first append.
type openedJournal struct {
	seq uint64
	j   *journal
	err error
}

// openNextJournal creates the (empty) journal of checkpoint seq in the
// background: creating it takes three fsyncs (the file, the directory),
// which the first write after a checkpoint, typically a small change
// right after a large import, need not wait for. s.mu must be held.
func (s *Store) openNextJournal(seq uint64) {
	ch := make(chan openedJournal, 1)
	s.nextJournal = ch
	go func() {
		j, err := createJournal(s.dir, seq)
		ch <- openedJournal{seq: seq, j: j, err: err}
	}()
}

// takeNextJournal returns the journal opened ahead for checkpoint seq
// with size bytes of records, nil when there is none (or it failed: the
// caller opens it again, and reports what fails then). s.mu must be held.
func (s *Store) takeNextJournal(seq uint64, size int64) *journal {
	if s.nextJournal == nil {
		return nil
	}
	o := <-s.nextJournal
	s.nextJournal = nil
	if o.err != nil || o.j == nil || o.seq != seq || o.j.size != size {
		if o.j != nil {
			o.j.close()
		}
		return nil
	}
	return o.j
}

// checkpoint writes the state seen by txn as the next checkpoint file and
// prunes old ones. s.mu must be held.
func (s *Store) checkpoint(txn *memdb.Txn) error {
	parts, size, err := encodeCheckpoint(txn)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	seq := s.seq + 1
	name := checkpointName(seq)
	renamed, err := writePartsDurable(s.dir, name, parts)
	if renamed {
		s.seq = seq
		s.files = append(s.files, seq)
		// The new checkpoint starts a journal of its own.
		s.closeJournal()
		s.appendable, s.journalSize, s.checkpointSize = true, 0, size
	}
	if err != nil {
		if renamed {
			// The file may or may not survive a crash; take it back so a
			// restart cannot load a state this call reports as failed.
			if rerr := os.Remove(filepath.Join(s.dir, name)); rerr == nil || errors.Is(rerr, os.ErrNotExist) {
				s.files = slices.DeleteFunc(s.files, func(x uint64) bool { return x == seq })
				syncDir(s.dir) // best effort: the write already failed
			}
		}
		// Until a checkpoint succeeds, no journal follows the newest one.
		s.appendable = false
		return fmt.Errorf("checkpoint %s: %w", filepath.Join(s.dir, name), err)
	}
	s.prune()
	if !s.checkpointEveryWrite {
		s.openNextJournal(seq)
	}
	return nil
}

// prune deletes all but the newest checkpointsKept checkpoint files, and
// the journals of those it deletes, in the background: the new checkpoint
// is durable already, and deleting a file of tens of megabytes takes tens
// of milliseconds, which the write that made the checkpoint need not wait
// for. A checkpoint that cannot be deleted is tried again after the next
// one. s.mu must be held.
func (s *Store) prune() {
	s.pruneMu.Lock()
	if len(s.undeleted) > 0 {
		s.files = append(slices.Sorted(slices.Values(s.undeleted)), s.files...)
		s.undeleted = nil
	}
	s.pruneMu.Unlock()
	var old []uint64
	if len(s.files) > checkpointsKept {
		old = slices.Clone(s.files[:len(s.files)-checkpointsKept])
		s.files = s.files[len(s.files)-checkpointsKept:]
	}
	oldest := s.files[0]
	prev, done := s.lastPrune, make(chan struct{})
	s.lastPrune = done
	s.pruning.Go(func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		s.pruneMu.Lock()
		defer s.pruneMu.Unlock()
		for _, seq := range old {
			err := os.Remove(filepath.Join(s.dir, checkpointName(seq)))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				s.undeleted = append(s.undeleted, seq)
			}
		}
		for _, seq := range s.undeleted {
			oldest = min(oldest, seq) // its journal goes with it
		}
		s.pruneJournals(oldest)
	})
}

// pruneJournals deletes the journals of the checkpoints before oldest;
// like prune, it tries again after the next checkpoint.
func (s *Store) pruneJournals(oldest uint64) {
	seqs, err := listJournals(s.dir)
	if err != nil {
		return
	}
	for _, seq := range seqs {
		if seq < oldest {
			os.Remove(filepath.Join(s.dir, journalName(seq))) // best effort
		}
	}
}
