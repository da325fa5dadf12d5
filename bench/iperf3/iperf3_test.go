package iperf3

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseSumsStreamsAtTheReceiver(t *testing.T) {
	data, err := os.ReadFile("testdata/p2-loopback.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if r.ReceivedBitsPerSecond != 26141899937.098755 {
		t.Errorf("received = %v, want sum_received.bits_per_second 26141899937.098755", r.ReceivedBitsPerSecond)
	}
	if r.ReceivedBytes != 3272867840 {
		t.Errorf("received bytes = %d, want sum_received.bytes 3272867840", r.ReceivedBytes)
	}
	if r.SentBitsPerSecond != 26172630703.50282 || r.Retransmits != 5 || r.Streams != 2 {
		t.Errorf("got %+v, want sent 26172630703.50282, 5 retransmits, 2 streams", r)
	}
}

func TestParseReportsIperfsOwnError(t *testing.T) {
	data, err := os.ReadFile("testdata/refused.json")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data)
	if err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("error = %v, want iperf3's connection refused", err)
	}
}

func TestParseRefusesEmptyTransferAndGarbage(t *testing.T) {
	if _, err := Parse([]byte(`{"end":{"sum_received":{"bits_per_second":0}}}`)); !errors.Is(err, ErrNoTransfer) {
		t.Errorf("zero transfer: error = %v, want ErrNoTransfer", err)
	}
	if _, err := Parse([]byte(`iperf3: error - unable to connect`)); err == nil {
		t.Error("non-JSON output accepted")
	}
}
