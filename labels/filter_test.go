package labels

import (
	"maps"
	"reflect"
	"strings"
	"testing"
)

// composeLabels are the labels Docker Compose v2 (2.29) puts on the first
// replica of service "web" of project "shop", merged with the labels of an
// image built with buildx (OCI annotations) and one label of the user's own.
func composeLabels() map[string]string {
	return map[string]string{
		"com.docker.compose.config-hash":          "5b0e3a3d6f0e8c1a9b2f4c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b",
		"com.docker.compose.container-number":     "1",
		"com.docker.compose.depends_on":           "db:service_started:false",
		"com.docker.compose.image":                "sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d",
		"com.docker.compose.oneoff":               "False",
		"com.docker.compose.project":              "shop",
		"com.docker.compose.project.config_files": "/home/ana/shop/compose.yaml",
		"com.docker.compose.project.working_dir":  "/home/ana/shop",
		"com.docker.compose.service":              "web",
		"com.docker.compose.version":              "2.29.7",
		"org.opencontainers.image.created":        "2025-03-14T15:09:26Z",
		"org.opencontainers.image.revision":       "3f2c1e0",
		"org.opencontainers.image.source":         "https://example.com/shop.git",
		"maintainer":                              "ana@example.com",
		"app":                                     "web",
	}
}

func TestDefaultFilterKeepsComposeServiceAndUserLabels(t *testing.T) {
	f, err := NewFilter(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Apply(composeLabels())
	want := Labels{
		"com.docker.compose.project": "shop",
		"com.docker.compose.service": "web",
		"maintainer":                 "ana@example.com",
		"app":                        "web",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Apply(compose labels) = %v\nwant %v", got, want)
	}
}

// TestDefaultFilterGivesReplicasOneIdentity checks what the filter is for:
// replicas, recreated containers and one-off runs of one compose service,
// and rebuilds of its image, all have the same identity labels.
func TestDefaultFilterGivesReplicasOneIdentity(t *testing.T) {
	f, err := NewFilter(nil)
	if err != nil {
		t.Fatal(err)
	}
	first := f.Apply(composeLabels()).String()
	variants := map[string]map[string]string{
		"second replica": {"com.docker.compose.container-number": "2"},
		"after an edit of compose.yaml": {
			"com.docker.compose.config-hash": "0000000000000000000000000000000000000000000000000000000000000000",
		},
		"compose run": {"com.docker.compose.oneoff": "True", "com.docker.compose.container-number": "7"},
		"rebuilt image": {
			"com.docker.compose.image":          "sha256:1111111111111111111111111111111111111111111111111111111111111111",
			"org.opencontainers.image.created":  "2025-04-01T00:00:00Z",
			"org.opencontainers.image.revision": "a1b2c3d",
			"org.opencontainers.image.version":  "1.2.4",
		},
		"other checkout, newer compose": {
			"com.docker.compose.project.working_dir":  "/srv/shop",
			"com.docker.compose.project.config_files": "/srv/shop/compose.yaml,/srv/shop/compose.prod.yaml",
			"com.docker.compose.version":              "2.31.0",
			"com.docker.compose.depends_on":           "",
		},
		"UBI image rebuilt": {
			"build-date": "2025-04-01T00:00:00", "vcs-ref": "abc", "com.redhat.build-host": "b1",
			"io.buildah.version": "1.38.0", "org.label-schema.build-date": "20250401",
		},
	}
	for name, change := range variants {
		t.Run(name, func(t *testing.T) {
			l := composeLabels()
			maps.Copy(l, change)
			if got := f.Apply(l).String(); got != first {
				t.Errorf("identity labels = %q, want the first replica's %q", got, first)
			}
		})
	}
	// What does tell services apart still does.
	other := composeLabels()
	other["com.docker.compose.service"] = "db"
	if got := f.Apply(other).String(); got == first {
		t.Errorf("service db has the identity labels of service web: %q", got)
	}
}

func TestFilterPatterns(t *testing.T) {
	all := map[string]string{
		"app": "web", "tier": "front", "team": "a",
		"com.example.build-id": "17", "com.example.owner": "ana",
		"io.k8s.x": "1", "": "empty key",
		"cidr:10.0.0.0/8": "",
	}
	tests := []struct {
		name     string
		patterns []string
		want     Labels
	}{
		{"everything", []string{"*"}, Labels{
			"app": "web", "tier": "front", "team": "a", "com.example.build-id": "17", "com.example.owner": "ana", "io.k8s.x": "1", "": "empty key",
		}},
		{"only named keys", []string{"app", "tier"}, Labels{"app": "web", "tier": "front"}},
		{"glob prefix", []string{"com.example.*"}, Labels{"com.example.build-id": "17", "com.example.owner": "ana"}},
		{"glob suffix", []string{"*-id"}, Labels{"com.example.build-id": "17"}},
		{"glob middle", []string{"com.*.owner"}, Labels{"com.example.owner": "ana"}},
		{"two stars", []string{"*e*e*"}, Labels{"com.example.build-id": "17", "com.example.owner": "ana"}},
		{"star matches empty", []string{"app*"}, Labels{"app": "web"}},
		{"exclude after include", []string{"*", "!com.example.*", "!io.*"}, Labels{"app": "web", "tier": "front", "team": "a", "": "empty key"}},
		{"last match wins: include back", []string{"*", "!com.example.*", "com.example.owner", "!t*"},
			Labels{"app": "web", "com.example.owner": "ana", "io.k8s.x": "1", "": "empty key"}},
		{"exclude after include drops it", []string{"app", "tier", "!app"}, Labels{"tier": "front"}},
		{"whitespace around patterns", []string{" app ", "\ttier"}, Labels{"app": "web", "tier": "front"}},
		{"question mark is literal", []string{"ap?"}, Labels{}},
		{"case-sensitive", []string{"APP"}, Labels{}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFilter(tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			got := f.Apply(all)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NewFilter(%q).Apply = %v, want %v", tt.patterns, got, tt.want)
			}
			if _, ok := got["cidr:10.0.0.0/8"]; ok {
				t.Errorf("a cidr: label became an identity label")
			}
		})
	}
}

func TestNewFilterRefusesBadPatterns(t *testing.T) {
	bad := map[string][]string{
		"empty pattern":        {"*", ""},
		"blank pattern":        {"app", "  "},
		"bare bang":            {"*", "!"},
		"equals sign":          {"app=web"},
		"comma":                {"app,tier"},
		"only exclusions":      {"!com.docker.compose.*"},
		"only exclusions, two": {"!a", "!b"},
	}
	for name, patterns := range bad {
		t.Run(name, func(t *testing.T) {
			if f, err := NewFilter(patterns); err == nil {
				t.Errorf("NewFilter(%q) = %v, want an error", patterns, f)
			}
		})
	}
}

func TestFilterStringIsTheFlagForm(t *testing.T) {
	f, err := NewFilter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), strings.Join(DefaultFilterPatterns, ","); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	again, err := NewFilter(strings.Split(f.String(), ","))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := f.Apply(composeLabels()), again.Apply(composeLabels()); !reflect.DeepEqual(a, b) {
		t.Errorf("a filter rebuilt from String() filters differently: %v vs %v", a, b)
	}
}

func TestFilterApplyNeverReturnsNil(t *testing.T) {
	f, err := NewFilter([]string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Apply(nil); got == nil || len(got) != 0 {
		t.Errorf("Apply(nil) = %#v, want an empty, non-nil set", got)
	}
}
