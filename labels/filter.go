package labels

import (
	"fmt"
	"strings"
)

// CIDRKeyPrefix starts the label key of a CIDR identity ("cidr:10.0.0.0/8").
// Container labels with this prefix are never identity labels: a container
// must not be able to claim the identity of an address range.
const CIDRKeyPrefix = "cidr:"

// DefaultFilterPatterns are the identity label patterns used when the
// daemon's --identity-labels flag is not given. They keep every label except
// those that differ between containers of one application, or between
// builds of one image, and so would split what should be one identity:
//
//   - com.docker.compose.*: compose's bookkeeping; config-hash (changes with
//     any edit of the service), container-number (per replica), oneoff
//     (set on `compose run` containers), version (of compose itself),
//     project.working_dir, project.config_files and project.environment_file
//     (host paths), depends_on, image (a digest), replace (the container a
//     recreate replaces). Two of them are kept, because they name the
//     application: com.docker.compose.project and com.docker.compose.service.
//   - org.opencontainers.image.*: OCI image annotations (created, revision,
//     version, source, ref.name, base.digest, ...), per build.
//   - org.label-schema.*: the older label-schema.org convention (build-date,
//     vcs-ref, version, ...), per build.
//   - build-date, vcs-ref, com.redhat.build-host, io.buildah.version: per-build
//     labels of Red Hat UBI and buildah-built images.
var DefaultFilterPatterns = []string{
	"*",
	"!com.docker.compose.*",
	"com.docker.compose.project",
	"com.docker.compose.service",
	"!org.opencontainers.image.*",
	"!org.label-schema.*",
	"!build-date",
	"!vcs-ref",
	"!com.redhat.build-host",
	"!io.buildah.version",
}

// Filter decides which container labels are identity labels.
//
// It is built from a list of patterns, as given to the daemon's
// --identity-labels flag (comma-separated, so no pattern contains a comma):
//
//   - A pattern is a glob on the label key. "*" matches any run of
//     characters, dots included, and the empty one; every other character,
//     "?" and "[" included, matches itself. Keys are case-sensitive. Values
//     play no part.
//   - A pattern starting with "!" excludes the keys it matches; any other
//     includes them.
//   - The last pattern that matches a key decides; a key that no pattern
//     matches is excluded. So "*" first keeps everything the later "!"
//     patterns do not exclude, and a list without "*" names exactly what to
//     keep: "app,tier,com.docker.compose.service".
//
// Keys starting with [CIDRKeyPrefix] are always excluded, whatever the
// patterns say. See [DefaultFilterPatterns] for the default.
type Filter struct {
	patterns []string // as given, for String
	rules    []rule
}

type rule struct {
	exclude bool
	parts   []string // the pattern split at each "*"
}

// NewFilter returns a Filter for patterns (see [Filter] for the syntax); no
// patterns at all (the flag not given) means [DefaultFilterPatterns].
// Whitespace around each pattern is ignored. It refuses an empty pattern, a
// bare "!", a pattern containing "=" or ",", and a list made only of
// exclusions (which would keep nothing: start it with "*").
func NewFilter(patterns []string) (*Filter, error) {
	if len(patterns) == 0 {
		patterns = DefaultFilterPatterns
	}
	f := &Filter{}
	included := false
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		r := rule{}
		glob := p
		if g, ok := strings.CutPrefix(p, "!"); ok {
			r.exclude = true
			glob = g
		}
		if glob == "" {
			return nil, fmt.Errorf("identity label pattern %q: empty", p)
		}
		if strings.ContainsAny(glob, "=,") {
			return nil, fmt.Errorf("identity label pattern %q: a label key pattern contains neither \"=\" nor \",\"", p)
		}
		r.parts = strings.Split(glob, "*")
		included = included || !r.exclude
		f.patterns = append(f.patterns, p)
		f.rules = append(f.rules, r)
	}
	if !included {
		return nil, fmt.Errorf("identity label patterns %q: only exclusions, which keep nothing (start with \"*\" to keep every other label)", strings.Join(f.patterns, ","))
	}
	return f, nil
}

// Keeps reports whether key is an identity label.
func (f *Filter) Keeps(key string) bool {
	if strings.HasPrefix(key, CIDRKeyPrefix) {
		return false
	}
	for i := len(f.rules) - 1; i >= 0; i-- {
		if f.rules[i].match(key) {
			return !f.rules[i].exclude
		}
	}
	return false
}

// Apply returns the identity labels among all, a container's labels. The
// result is never nil.
func (f *Filter) Apply(all map[string]string) Labels {
	out := make(Labels, len(all))
	for k, v := range all {
		if f.Keeps(k) {
			out[k] = v
		}
	}
	return out
}

// String returns the patterns in the form the --identity-labels flag takes.
func (f *Filter) String() string {
	return strings.Join(f.patterns, ",")
}

// match reports whether key matches the glob whose "*"-separated parts r
// holds.
func (r rule) match(key string) bool {
	parts := r.parts
	if len(parts) == 1 {
		return key == parts[0]
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(key) < len(first)+len(last) || !strings.HasPrefix(key, first) || !strings.HasSuffix(key, last) {
		return false
	}
	rest := key[len(first) : len(key)-len(last)]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return true
}
