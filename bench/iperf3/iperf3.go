// Package iperf3 reads the JSON report of an iperf3 client run (-J).
package iperf3

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNoTransfer is returned when the report holds no received data.
var ErrNoTransfer = errors.New("iperf3 moved no data")

// Result is what a throughput measurement needs from a client report.
type Result struct {
	// ReceivedBitsPerSecond is the receiver's throughput summed over all
	// streams: what arrived, not what the sender pushed into its buffers.
	ReceivedBitsPerSecond float64 `json:"receivedBitsPerSecond"`
	SentBitsPerSecond     float64 `json:"sentBitsPerSecond"`
	Retransmits           int     `json:"retransmits"`
	Streams               int     `json:"streams"`
	Seconds               float64 `json:"seconds"`
	// ReceivedBytes is what the receiver got over the test, all streams.
	ReceivedBytes int64 `json:"receivedBytes"`
}

// report mirrors the parts of iperf3's JSON output that Result uses.
type report struct {
	Start struct {
		TestStart struct {
			NumStreams int `json:"num_streams"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent struct {
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// Parse reads one iperf3 -J report. A report that carries iperf3's own
// error, or no received data, is an error.
func Parse(data []byte) (Result, error) {
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("parse iperf3 report: %w", err)
	}
	if r.Error != "" {
		return Result{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return Result{}, ErrNoTransfer
	}
	return Result{
		ReceivedBitsPerSecond: r.End.SumReceived.BitsPerSecond,
		SentBitsPerSecond:     r.End.SumSent.BitsPerSecond,
		Retransmits:           r.End.SumSent.Retransmits,
		Streams:               r.Start.TestStart.NumStreams,
		Seconds:               r.End.SumReceived.Seconds,
		ReceivedBytes:         r.End.SumReceived.Bytes,
	}, nil
}
