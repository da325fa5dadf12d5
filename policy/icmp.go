package policy

import "strconv"

// ICMP message type names, as Cilium accepts them in icmps[].fields[].type
// (IANA's names in CamelCase). A name means a different number in each
// family.
var (
	icmpv4Types = map[string]uint8{
		"EchoReply":              0,
		"DestinationUnreachable": 3,
		"Redirect":               5,
		"Echo":                   8,
		"EchoRequest":            8,
		"RouterAdvertisement":    9,
		"RouterSelection":        10,
		"TimeExceeded":           11,
		"ParameterProblem":       12,
		"Timestamp":              13,
		"TimestampReply":         14,
		"Photuris":               40,
		"ExtendedEchoRequest":    42,
		"ExtendedEchoReply":      43,
	}
	icmpv6Types = map[string]uint8{
		"DestinationUnreachable":                 1,
		"PacketTooBig":                           2,
		"TimeExceeded":                           3,
		"ParameterProblem":                       4,
		"EchoRequest":                            128,
		"EchoReply":                              129,
		"MulticastListenerQuery":                 130,
		"MulticastListenerReport":                131,
		"MulticastListenerDone":                  132,
		"RouterSolicitation":                     133,
		"RouterAdvertisement":                    134,
		"NeighborSolicitation":                   135,
		"NeighborAdvertisement":                  136,
		"RedirectMessage":                        137,
		"RouterRenumbering":                      138,
		"ICMPNodeInformationQuery":               139,
		"ICMPNodeInformationResponse":            140,
		"InverseNeighborDiscoverySolicitation":   141,
		"InverseNeighborDiscoveryAdvertisement":  142,
		"HomeAgentAddressDiscoveryRequest":       144,
		"HomeAgentAddressDiscoveryReply":         145,
		"MobilePrefixSolicitation":               146,
		"MobilePrefixAdvertisement":              147,
		"DuplicateAddressRequestCodeSuffix":      157,
		"DuplicateAddressConfirmationCodeSuffix": 158,
		"ExtendedEchoRequest":                    160,
		"ExtendedEchoReply":                      161,
	}
)

// icmpTypeNumber returns the number of an ICMP type written as a decimal
// number or as a name of the family (FamilyIPv4 or FamilyIPv6).
func icmpTypeNumber(family, t string) (uint8, bool) {
	if isDecimal(t) {
		n, err := strconv.ParseUint(t, 10, 8)
		return uint8(n), err == nil
	}
	names := icmpv4Types
	if family == FamilyIPv6 {
		names = icmpv6Types
	}
	n, ok := names[t]
	return n, ok
}
