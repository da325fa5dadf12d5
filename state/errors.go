package state

import (
	"errors"
)

var (
	// ErrNotFound means the requested object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a write would break a uniqueness rule of the schema
	// (two networks with one index, two pools with one prefix in an address
	// space).
	ErrConflict = errors.New("conflict")
	// ErrCorruptCheckpoint means a checkpoint file failed validation: bad
	// magic, unsupported version, wrong length, checksum mismatch or an
	// undecodable payload.
	ErrCorruptCheckpoint = errors.New("corrupt checkpoint")
)

// CheckpointError describes one checkpoint file that could not be loaded.
type CheckpointError struct {
	Path string
	Err  error
}

func (e *CheckpointError) Error() string {
	return "checkpoint " + e.Path + ": " + e.Err.Error()
}

func (e *CheckpointError) Unwrap() error { return e.Err }
