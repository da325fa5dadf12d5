// Package integration holds membrane's end-to-end tests: they start a private
// dockerd and the membrane daemon as a legacy socket plugin, build a busybox
// test image with `docker import`, and check what a user of
// `docker network create -d membrane` would see — addresses, connectivity,
// isolation and survival of a daemon restart — next to the same checks
// against Docker's own bridge driver as a baseline.
//
// The tests need root and dockerd; without them (or with -short) they skip.
// Run them with
//
//	go test ./integration/ -v
//	go test ./integration/ -v -run '/bridge$'    # the bridge baseline only
//	go test ./integration/ -v -run '/membrane$'  # membrane only
//
// The probe subdirectory is the static checker binary baked into the image.
package integration
