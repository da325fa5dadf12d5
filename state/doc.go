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
// Write is durable before it returns: after fn succeeds, the change is
// written to disk and fsynced, and only then is the transaction committed
// in memory. If that fails the transaction is aborted, so memory and disk
// never disagree and a caller that got an error has changed nothing.
// Writers are serialized, so changes land on disk in commit order. A write
// that changes nothing writes nothing.
//
// A write usually goes to the journal: one record holding the objects it
// put and the objects it deleted, appended to journal-<sequence>.log (the
// journal of checkpoint <sequence>, 0 before the first checkpoint) and
// fsynced, so that a write costs what it changes. A record is
//
//	offset  size  field
//	0       4     magic "MBRJ"
//	4       4     payload length in bytes, big-endian uint32
//	8       32    SHA-256 of the payload
//	40      n     payload: {"changes":[{"table":T,"put":OBJECT}|{"table":T,"delete":OBJECT}...]}
//
// Once the journal would grow larger than the checkpoint it follows (and
// than 4 MiB), the write becomes a checkpoint instead (a snapshot of the
// still-open transaction), which starts a new, empty journal. A
// checkpoint file is a 52-byte header followed by a JSON payload holding
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
// kept, with their journals. [Open] loads the newest checkpoint that passes
// every check (magic, version, exact length, checksum, decodable payload,
// schema constraints); any that fail are reported in [Restored].Skipped and
// never partially loaded. If none is valid the store starts empty and says
// so. It then replays the loaded checkpoint's journal, record by record
// (each record holds the final state of the objects its write changed:
// they are taken out, then put back through the same helpers as regular
// writes), up to the first record that is torn, fails its checksum or does
// not apply: that record and the rest are reported (a *JournalError in
// Skipped) and cut off before the next append. A torn tail, an incomplete
// last record, was never acknowledged (a write returns only after its
// record is fsynced): JournalError.Torn, a warning. Any other bad record
// means the acknowledged writes from it on are lost: an error, and the
// bytes cut off are first copied to <journal>.cut-<offset>. When an older checkpoint was loaded because the
// newest was corrupt, its journal gives the state just before the newest
// checkpoint was written, and the next write checkpoints.
package state
