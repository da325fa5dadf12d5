// Package netload is the traffic generator of membrane's benchmark: one
// small server and three client loads, run unchanged in every setup the
// benchmark compares.
//
//   - rr: one persistent TCP connection, a 1-byte request and a 1-byte
//     response at a time; transaction rate and latency quantiles.
//   - crr: connect, 1-byte request, 1-byte response, close, again and
//     again; connection rate. The server closes first (as an HTTP/1.0
//     server does), so TIME_WAIT sockets pile up on the server and the
//     client never runs out of ephemeral ports.
//   - udp: 64-byte datagrams as fast as the sender can write them; the
//     rate is counted at the receiver, between the first and the last
//     datagram it got.
//
// Sockets are plain blocking file descriptors driven by system calls, not
// Go's netpoller: a transaction costs two system calls on each side, as in
// netperf, so the tool's own overhead stays small next to what it
// measures. The same server also answers the control connection that the
// udp load uses to read the receiver's counters, and Poll dials until a
// port opens or closes (control-plane latencies).
package netload
