// Package firewall programs the host's iptables and ip6tables for membrane:
// masquerade of traffic that leaves the host, published ports (DNAT), the
// isolation of internal networks, and (on request) forwarding itself.
//
// It is a reconciler, like the datapath: Sync takes the networks and
// endpoints state holds and makes the kernel match them. Each daemon owns
// three chains of its own (named after its instance, so two daemons on one
// host never rewrite each other's rules), which Sync replaces whole and
// atomically with iptables-restore; they hang off shared chains
// (MEMBRANE-DNAT, MEMBRANE-POSTROUTING, MEMBRANE-FORWARD, MEMBRANE-INPUT)
// that are jumped to from the built-in chains. Jumps are checked and
// re-inserted at every Sync, because Docker rebuilds its own chains when it
// restarts and an administrator may flush them.
//
// Policy is not this package's job: the BPF datapath enforces it on every
// packet before and after the host stack. The rules here only translate
// addresses and keep internal networks in.
package firewall
