package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want Kind
	}{
		{fmt.Errorf("x: %w", ErrBadRequest), KindBadRequest},
		{fmt.Errorf("x: %w", ErrUnknownAddressSpace), KindBadRequest},
		{fmt.Errorf("x: %w", ErrNoSuchPool), KindNotFound},
		{fmt.Errorf("x: %w", ErrPoolOverlap), KindConflict},
		{fmt.Errorf("x: %w", ErrAddressInUse), KindConflict},
		{fmt.Errorf("x: %w", ErrNoFreePool), KindUnavailable},
		{fmt.Errorf("x: %w", ErrPoolExhausted), KindUnavailable},
		{errors.New("disk on fire"), KindInternal},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%q) = %v, want %v", tt.err, got, tt.want)
		}
		preds := map[Kind]bool{
			KindBadRequest:  IsBadRequest(tt.err),
			KindNotFound:    IsNotFound(tt.err),
			KindConflict:    IsConflict(tt.err),
			KindUnavailable: IsUnavailable(tt.err),
		}
		for k, got := range preds {
			if got != (k == tt.want) {
				t.Errorf("Is%v(%q) = %v, want %v", k, tt.err, got, k == tt.want)
			}
		}
	}
	if IsBadRequest(nil) || IsNotFound(nil) || IsConflict(nil) || IsUnavailable(nil) {
		t.Error("a nil error matched a predicate")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name     string
		cfg      func(*Config)
		fragment string
	}{
		{"same spaces", func(c *Config) { c.LocalSpace, c.GlobalSpace = "x", "x" }, `both "x"`},
		{"IPv6 range for IPv4", func(c *Config) { c.IPv4Range = pfx("fd00::/48") }, "not an IPv4 prefix"},
		{"host bits", func(c *Config) { c.IPv4Range = pfx("10.210.1.0/16") }, "did you mean 10.210.0.0/16"},
		{"pool wider than range", func(c *Config) { c.IPv4Range = pfx("10.210.0.0/26") }, "/24 must be between"},
		{"IPv4 pool too long", func(c *Config) { c.IPv4PoolBits = 31 }, "/31"},
		{"IPv6 pool too short", func(c *Config) { c.IPv6PoolBits = 40 }, "/40"},
		{"broken random source", func(c *Config) { c.Rand = strings.NewReader("ab") }, "ULA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.cfg(&cfg)
			_, err := New(openStore(t, t.TempDir()), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.fragment) {
				t.Errorf("New = %v, want an error mentioning %q", err, tt.fragment)
			}
		})
	}
	if _, err := New(nil, testConfig()); err == nil {
		t.Error("New(nil store) succeeded")
	}
}

func TestNextFreePrefix(t *testing.T) {
	tests := []struct {
		name   string
		within string
		bits   int
		taken  []string
		want   string // "" = none
	}{
		{"empty", "10.0.0.0/16", 24, nil, "10.0.0.0/24"},
		{"first taken", "10.0.0.0/16", 24, []string{"10.0.0.0/24"}, "10.0.1.0/24"},
		{"small hole", "10.0.0.0/16", 24, []string{"10.0.0.0/24", "10.0.1.128/25"}, "10.0.2.0/24"},
		{"gap reused", "10.0.0.0/16", 24, []string{"10.0.0.0/24", "10.0.2.0/24"}, "10.0.1.0/24"},
		{"unsorted", "10.0.0.0/16", 24, []string{"10.0.1.0/24", "10.0.0.0/24"}, "10.0.2.0/24"},
		{"nested taken", "10.0.0.0/16", 24, []string{"10.0.0.0/24", "10.0.0.0/20", "10.0.3.4/32"}, "10.0.16.0/24"},
		{"covering", "10.0.0.0/16", 24, []string{"10.0.0.0/8"}, ""},
		{"full", "10.0.0.0/23", 24, []string{"10.0.0.0/24", "10.0.1.0/24"}, ""},
		{"end of address space", "255.255.255.0/24", 25, []string{"255.255.255.0/25", "255.255.255.128/26"}, ""},
		{"other family ignored", "10.0.0.0/16", 24, []string{"::/0"}, "10.0.0.0/24"},
		{"IPv6", "fd00:1:2::/48", 64, []string{"fd00:1:2::/64", "fd00:1:2:1::/64", "fd00:1:2:2::/63"}, "fd00:1:2:4::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var taken []netip.Prefix
			for _, s := range tt.taken {
				taken = append(taken, pfx(s))
			}
			got, ok := nextFreePrefix(pfx(tt.within), tt.bits, taken)
			if tt.want == "" {
				if ok {
					t.Errorf("got %s, want none", got)
				}
				return
			}
			if !ok || got != pfx(tt.want) {
				t.Errorf("got %s, %v; want %s", got, ok, tt.want)
			}
		})
	}
}
