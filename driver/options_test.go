package driver

import (
	"errors"
	"strings"
	"testing"
)

func TestParseNetworkOptionsInbound(t *testing.T) {
	for _, tc := range []struct {
		value  string
		routed bool
	}{{"", false}, {InboundPublished, false}, {InboundRouted, true}} {
		got, err := parseNetworkOptions(map[string]string{OptionInbound: tc.value})
		if err != nil || got.RoutedInbound != tc.routed {
			t.Errorf("%s=%q: got %+v, %v; want RoutedInbound %v", OptionInbound, tc.value, got, err, tc.routed)
		}
	}
	_, err := parseNetworkOptions(map[string]string{OptionInbound: "open"})
	if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), `"published"`) || !strings.Contains(err.Error(), `"routed"`) {
		t.Errorf(`%s="open": got %v, want ErrInvalidOption naming both values`, OptionInbound, err)
	}
}
