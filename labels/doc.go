// Package labels turns container labels into security identities: it
// learns each endpoint's container labels from Docker's events and API
// (Watcher, never from inside a Docker plugin call), filters out labels
// that differ per container instance (Filter), matches label selectors
// (Selector), and allocates one numeric identity per distinct set of
// identity labels, and one per CIDR that policy names (Allocator).
package labels
