package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/plugin"
)

// sameShape fails unless cli has the fields of daemon, with the same names,
// JSON tags and kinds, recursively through structs, slices, pointers and
// maps: the CLI must decode, and print with -o json, all the daemon sends.
func sameShape(t *testing.T, path string, cli, daemon reflect.Type) {
	t.Helper()
	if cli.Kind() != daemon.Kind() {
		t.Errorf("%s: CLI has a %s, the daemon a %s", path, cli.Kind(), daemon.Kind())
		return
	}
	switch cli.Kind() {
	case reflect.Pointer, reflect.Slice:
		sameShape(t, path+"[]", cli.Elem(), daemon.Elem())
	case reflect.Map:
		sameShape(t, path+"[key]", cli.Key(), daemon.Key())
		sameShape(t, path+"[]", cli.Elem(), daemon.Elem())
	case reflect.Struct:
		if cli == reflect.TypeFor[time.Time]() || daemon == reflect.TypeFor[time.Time]() || cli == reflect.TypeFor[json.RawMessage]() {
			if cli != daemon {
				t.Errorf("%s: CLI has %s, the daemon %s", path, cli, daemon)
			}
			return
		}
		if cli.NumField() != daemon.NumField() {
			t.Errorf("%s: CLI has %d fields, the daemon %d", path, cli.NumField(), daemon.NumField())
			return
		}
		for i := range cli.NumField() {
			c, d := cli.Field(i), daemon.Field(i)
			if c.Name != d.Name || c.Tag != d.Tag {
				t.Errorf("%s: field %d is %s `%s` in the CLI, %s `%s` in the daemon", path, i, c.Name, c.Tag, d.Name, d.Tag)
				continue
			}
			sameShape(t, path+"."+c.Name, c.Type, d.Type)
		}
	}
}

func TestAPITypesMirrorTheDaemons(t *testing.T) {
	for _, c := range []struct {
		name        string
		cli, daemon reflect.Type
	}{
		{"status", reflect.TypeFor[status](), reflect.TypeFor[plugin.Status]()},
		{"counter", reflect.TypeFor[counter](), reflect.TypeFor[datapath.Counter]()},
		{"endpointView", reflect.TypeFor[endpointView](), reflect.TypeFor[plugin.EndpointView]()},
		{"identityView", reflect.TypeFor[identityView](), reflect.TypeFor[plugin.IdentityView]()},
		{"policyView", reflect.TypeFor[policyView](), reflect.TypeFor[plugin.PolicyView]()},
		{"revisionView", reflect.TypeFor[revisionView](), reflect.TypeFor[plugin.RevisionView]()},
		{"eventView", reflect.TypeFor[eventView](), reflect.TypeFor[plugin.EventView]()},
	} {
		sameShape(t, c.name, c.cli, c.daemon)
	}
}

// printedAsSent decodes what the daemon encodes of v into a T and checks that
// printing it (-o json) gives the same JSON.
func printedAsSent[T any](t *testing.T, v any) T {
	t.Helper()
	want, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var got T
	if err := json.Unmarshal(want, &got); err != nil {
		t.Fatalf("%T: %v", got, err)
	}
	again, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, want) {
		t.Errorf("%T prints\n%s\nthe daemon sent\n%s", got, again, want)
	}
	return got
}

func TestAPITypesPrintWhatTheDaemonSent(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	icmp := uint8(3)
	printedAsSent[status](t, plugin.Status{Networks: 1, Endpoints: 2, Identities: 3, PolicyRules: 4, PolicyRevision: 5, Lockdown: []uint32{256},
		Counters: []datapath.Counter{{Reason: "drop_policy", Drop: true, Packets: 7, Bytes: 8}}})
	printedAsSent[endpointView](t, plugin.EndpointView{ID: "e", NetworkID: "n", ContainerID: "c", ContainerName: "web", Interface: "mbr1", MAC: "02:00:00:00:00:01",
		IPv4: "10.0.0.2", IPv6: "fd00::2", Identity: 256, IdentityName: "init", IdentitySince: &since, Labels: map[string]string{"app": "web"},
		PolicyIngress: true, PolicyEgress: true, Lockdown: true, SandboxKey: "/var/run/docker/netns/x", Ports: []string{"*:8080->80/tcp"}})
	printedAsSent[identityView](t, plugin.IdentityView{ID: 256, Reserved: "host", Labels: map[string]string{"a": "b"}, Endpoints: []string{"e"}})
	printedAsSent[policyView](t, plugin.PolicyView{Revision: 9, Rules: []json.RawMessage{json.RawMessage(`{"endpointSelector":{}}`)}})
	printedAsSent[revisionView](t, plugin.RevisionView{Revision: 10})
	stamp := since.Format("15:04:05.000")
	for _, tc := range []struct {
		ev   plugin.EventView
		line string
	}{
		{plugin.EventView{Time: since, Type: "drop", Reason: "drop_policy", Hook: "from_container", Endpoint: 4, Src: "10.0.0.2", Dst: "10.0.0.3", Proto: "tcp",
			SrcPort: 1234, DstPort: 80, SrcIdentity: 256, DstIdentity: 257, Direction: "egress", Verdict: "deny", Match: "l4", CT: "new", Length: 60},
			stamp + " drop   from_container 10.0.0.2:1234 -> 10.0.0.3:80 tcp identity 256 -> 257, egress deny (l4) reason drop_policy ct new"},
		{plugin.EventView{Time: since, Type: "trace", Hook: "to_container", Src: "fd00::2", Dst: "fd00::3", Proto: "icmpv6", ICMPType: &icmp, Length: 100},
			stamp + " trace  to_container   fd00::2 -> fd00::3 icmpv6 type 3"},
		{plugin.EventView{Time: since, Type: "policy", Hook: "from_container"},
			stamp + " policy from_container"},
	} {
		if got := printedAsSent[eventView](t, tc.ev).String(); got != tc.line {
			t.Errorf("monitor prints %q, want %q", got, tc.line)
		}
	}
}
