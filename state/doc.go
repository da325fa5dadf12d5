// Package state is membrane's single source of truth: an in-memory
// hashicorp/go-memdb database of networks, endpoints, IPAM pools, allocated
// addresses, security identities, policy rules and host-wide settings,
// checkpointed to disk after every write.
//
// # Transactions
//
// Readers take a snapshot with [Store.Read]; it never blocks and never sees a
// half-applied write. Writers go through [Store.Write], which runs a function
// inside one write transaction. The typed helpers (GetNetwork, PutPool,
// ListEndpointsByNetwork, ...) take the transaction as their first argument so
// that several of them compose into one atomic change.
//
// Objects handed out by the helpers are shared with the database and must
// never be modified: copy them (the Copy methods deep-copy), change the copy,
// and Put the copy.
//
// # Durability
//
// Write is durable before it returns: after fn succeeds, the would-be state
// (a snapshot of the still-open transaction) is written as a checkpoint file,
// fsynced and renamed into place, and the directory fsynced; only then is the
// transaction committed in memory. If the checkpoint cannot be written the
// transaction is aborted, so memory and disk never disagree and a caller that
// got an error has changed nothing. Writers are serialized, so checkpoints
// land in commit order. A write that changes nothing writes no checkpoint.
//
// A checkpoint file is a 52-byte header followed by a JSON payload holding
// every table:
//
//	offset  size  field
//	0       8     magic "MEMBRANE"
//	8       4     format version, big-endian uint32 (currently 1)
//	12      8     payload length in bytes, big-endian uint64
//	20      32    SHA-256 of the payload
//	52      n     payload
//
// The payload is a JSON object with one array per table. A table added later
// is a new field and keeps the format version: older checkpoints, which lack
// it, load with that table empty.
//
// Files are named checkpoint-<sequence, 20 digits>.ckpt; the newest three are
// kept. [Open] loads the newest checkpoint that passes every check (magic,
// version, exact length, checksum, decodable payload, schema constraints);
// any that fail are reported in [Restored].Skipped and never partially
// loaded. If none is valid the store starts empty and says so.
package state
