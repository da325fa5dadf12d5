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

	// mu serializes writers, so checkpoints are written in commit order;
	// it guards seq and files.
	mu    sync.Mutex
	db    *memdb.MemDB
	seq   uint64   // sequence number of the newest checkpoint file on disk
	files []uint64 // sequence numbers of checkpoint files on disk, oldest first
}

// Restored tells what Open loaded.
type Restored struct {
	// Path is the checkpoint that was loaded, "" when the store started
	// empty.
	Path string
	// Skipped holds one *CheckpointError for every checkpoint newer than
	// Path that could not be loaded, newest first.
	Skipped []error
}

// Open opens the store kept in dir, creating dir (mode 0700) if it is
// missing, and loads the newest valid checkpoint. Corrupt checkpoints are
// skipped and reported in Restored, as is starting empty because none was
// valid. Open fails only when dir itself cannot be used.
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

	s := &Store{dir: dir, files: seqs}
	if len(seqs) > 0 {
		s.seq = seqs[len(seqs)-1]
	}
	for i := len(seqs) - 1; i >= 0; i-- {
		path := filepath.Join(dir, checkpointName(seqs[i]))
		db, err := readCheckpoint(path)
		if err != nil {
			r.Skipped = append(r.Skipped, &CheckpointError{Path: path, Err: err})
			continue
		}
		s.db = db
		r.Path = path
		return s, r, nil
	}
	if s.db, err = newDB(); err != nil {
		return nil, r, err
	}
	return s, r, nil
}

func readCheckpoint(path string) (*memdb.MemDB, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeCheckpoint(b)
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
// transaction is aborted and the error returned. Otherwise the resulting
// state is checkpointed to disk and then committed, before Write returns; if
// the checkpoint cannot be written, the transaction is aborted and an error
// returned, so nothing changed, in memory or on disk.
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
	if len(txn.Changes()) == 0 {
		return nil
	}
	if err := s.checkpoint(txn.Snapshot()); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// checkpoint writes the state seen by txn as the next checkpoint file and
// prunes old ones. s.mu must be held.
func (s *Store) checkpoint(txn *memdb.Txn) error {
	b, err := encodeCheckpoint(txn)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	seq := s.seq + 1
	name := checkpointName(seq)
	renamed, err := writeFileDurable(s.dir, name, b)
	if renamed {
		s.seq = seq
		s.files = append(s.files, seq)
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
		return fmt.Errorf("checkpoint %s: %w", filepath.Join(s.dir, name), err)
	}
	s.prune()
	return nil
}

// prune deletes all but the newest checkpointsKept checkpoint files. The new
// checkpoint is already durable, so a file that cannot be deleted stays in
// the list and is tried again after the next write.
func (s *Store) prune() {
	if len(s.files) <= checkpointsKept {
		return
	}
	old := s.files[:len(s.files)-checkpointsKept]
	var kept []uint64
	for _, seq := range old {
		err := os.Remove(filepath.Join(s.dir, checkpointName(seq)))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			kept = append(kept, seq)
		}
	}
	s.files = append(kept, s.files[len(s.files)-checkpointsKept:]...)
}
