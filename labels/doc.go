// Package labels turns container labels into security identities: it filters
// out labels that differ per container instance, matches label selectors,
// and allocates one numeric identity per distinct set of identity labels.
package labels
