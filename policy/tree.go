package policy

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/membrane-net/membrane/labels"
)

// A document is read in two steps: JSON or YAML text becomes a tree of
// nodes (this file), then the tree is decoded into rules with a path for
// every problem (decode.go). The tree keeps object members in input order
// and refuses duplicate keys, which encoding/json would silently collapse.

type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindObject
	kindArray
)

func (k kind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindBool:
		return "a boolean"
	case kindNumber:
		return "a number"
	case kindString:
		return "a string"
	case kindObject:
		return "an object"
	case kindArray:
		return "an array"
	}
	return "an unknown value"
}

type node struct {
	kind    kind
	text    string // literal of a bool or number, value of a string
	members []member
	items   []*node
}

type member struct {
	key string
	val *node
}

// Limits on a document's shape. Policy nests about eight levels deep. A
// tree is at most as large as its text, except where YAML aliases repeat
// a subtree: the nodes they add are bounded separately ("billion laughs").
const (
	maxDepth      = 64
	maxAliasNodes = 1 << 16
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// parseTree reads a JSON document when the first non-blank character is
// '[' or '{', and a YAML document otherwise. Without paths, errors about
// a field carry an empty path.
func parseTree(data []byte, paths bool) (*node, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, syntaxError("empty document")
	}
	if trimmed[0] == '[' || trimmed[0] == '{' {
		return jsonTreePaths(data, paths)
	}
	return yamlTree(data)
}

func childPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// JSON

// jsonParser is a small JSON parser that builds the tree directly: about
// five times faster than encoding/json's token API, and it knows lines
// and columns. It follows RFC 8259; like encoding/json it turns invalid
// UTF-8 and lone surrogates into U+FFFD.
type jsonParser struct {
	data  []byte
	pos   int
	paths bool   // build paths for errors
	slab  []node // nodes are allocated from here, a chunk at a time
	// selectors the fast path decoded, by their text (see fastSelector),
	// and the keys of those compiled (see compiler.known)
	selectors map[string]labels.Selector
	known     map[uintptr]string
}

func (p *jsonParser) newNode(k kind) *node {
	if len(p.slab) == 0 {
		p.slab = make([]node, 256)
	}
	n := &p.slab[0]
	p.slab = p.slab[1:]
	n.kind = k
	return n
}

// knownKeys are the field names of the policy format: keys are looked up
// here so that each is one shared string, not one allocation per use.
var knownKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"labels", "key", "value", "source", "endpointSelector", "matchLabels", "matchExpressions", "operator", "values",
		"ingress", "ingressDeny", "egress", "egressDeny", "enableDefaultDeny", "description",
		"fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet", "toEndpoints", "toEntities", "toCIDR", "toCIDRSet",
		"toPorts", "ports", "port", "endPort", "protocol", "icmps", "fields", "family", "type", "cidr", "except",
		"name", "app", "TCP", "UDP", "ANY", "IPv4", "IPv6", "world", "host", "all", "init",
	} {
		m[k] = k
	}
	return m
}()

func jsonTree(data []byte) (*node, error) {
	return jsonTreePaths(data, true)
}

func jsonTreePaths(data []byte, paths bool) (*node, error) {
	p := &jsonParser{data: data, paths: paths}
	n, err := p.value("", 0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(p.data) {
		return nil, p.errorf("data after the top-level value")
	}
	return n, nil
}

func (p *jsonParser) errorf(format string, args ...any) error {
	if p.pos >= len(p.data) {
		return syntaxError("JSON: unexpected end of document")
	}
	line, col := position(p.data, int64(p.pos))
	return syntaxError("JSON: %s at line %d, column %d", fmt.Sprintf(format, args...), line, col)
}

func (p *jsonParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) value(path string, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, &FieldError{Path: path, Msg: "nested too deeply"}
	}
	p.skipSpace()
	if p.pos >= len(p.data) {
		return nil, p.errorf("")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(path, depth)
	case c == '[':
		return p.array(path, depth)
	case c == '"':
		s, err := p.string()
		if err != nil {
			return nil, err
		}
		n := p.newNode(kindString)
		n.text = s
		return n, nil
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true", kindBool)
	case c == 'f':
		return p.literal("false", kindBool)
	case c == 'n':
		return p.literal("null", kindNull)
	default:
		return nil, p.errorf("invalid character %q looking for a value", rune(c))
	}
}

func (p *jsonParser) literal(word string, k kind) (*node, error) {
	if !bytes.HasPrefix(p.data[p.pos:], []byte(word)) {
		return nil, p.errorf("invalid literal, want %s", word)
	}
	p.pos += len(word)
	n := p.newNode(k)
	if k == kindBool {
		n.text = word
	}
	return n, nil
}

func (p *jsonParser) object(path string, depth int) (*node, error) {
	p.pos++ // '{'
	n := p.newNode(kindObject)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return n, nil
	}
	var seen map[string]bool
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.errorf("want a string for an object key")
		}
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		kp := ""
		if p.paths {
			kp = childPath(path, key)
		}
		// Objects are small: a scan finds duplicates faster than a map,
		// which only large objects get.
		dup := false
		if seen != nil {
			dup = seen[key]
			seen[key] = true
		} else {
			for _, m := range n.members {
				if m.key == key {
					dup = true
				}
			}
			if len(n.members) == 16 {
				seen = make(map[string]bool, 32)
				for _, m := range n.members {
					seen[m.key] = true
				}
				seen[key] = true
			}
		}
		if dup {
			return nil, &FieldError{Path: kp, Msg: "duplicate key"}
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.errorf("want ':' after an object key")
		}
		p.pos++
		val, err := p.value(kp, depth+1)
		if err != nil {
			return nil, err
		}
		if n.members == nil {
			n.members = make([]member, 0, 4)
		}
		n.members = append(n.members, member{key, val})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errorf("")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return n, nil
		default:
			return nil, p.errorf("want ',' or '}' after an object member")
		}
	}
}

func (p *jsonParser) array(path string, depth int) (*node, error) {
	p.pos++ // '['
	n := p.newNode(kindArray)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return n, nil
	}
	for {
		ip := ""
		if p.paths {
			ip = indexPath(path, len(n.items))
		}
		val, err := p.value(ip, depth+1)
		if err != nil {
			return nil, err
		}
		n.items = append(n.items, val)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errorf("")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return n, nil
		default:
			return nil, p.errorf("want ',' or ']' after an array element")
		}
	}
}

func (p *jsonParser) number() (*node, error) {
	start := p.pos
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	if p.data[p.pos] == '-' {
		p.pos++
	}
	if p.pos < len(p.data) && p.data[p.pos] == '0' {
		p.pos++
	} else if digits() == 0 {
		return nil, p.errorf("invalid number")
	}
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return nil, p.errorf("invalid number")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return nil, p.errorf("invalid number")
		}
	}
	n := p.newNode(kindNumber)
	n.text = string(p.data[start:p.pos])
	return n, nil
}

// string reads a string literal at p.pos (on its opening quote).
func (p *jsonParser) string() (string, error) {
	p.pos++ // '"'
	start := p.pos
	// Fast path: no escapes, plain ASCII.
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			b := p.data[start:p.pos]
			p.pos++
			if k, ok := knownKeys[string(b)]; ok {
				return k, nil
			}
			return string(b), nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		p.pos++
	}
	buf := append([]byte(nil), p.data[start:p.pos]...)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf("control character %q in a string", rune(c))
		case c == '\\':
			if p.pos+1 >= len(p.data) {
				p.pos = len(p.data)
				return "", p.errorf("")
			}
			e := p.data[p.pos+1]
			p.pos += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", p.errorf("invalid \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r2 := unicode.ReplacementChar
					if p.pos+1 < len(p.data) && p.data[p.pos] == '\\' && p.data[p.pos+1] == 'u' {
						save := p.pos
						p.pos += 2
						if lo, ok := p.hex4(); ok && utf16.DecodeRune(r, lo) != unicode.ReplacementChar {
							r2 = utf16.DecodeRune(r, lo)
						} else {
							p.pos = save
						}
					}
					r = r2
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.pos -= 2
				return "", p.errorf("invalid escape %q in a string", "\\"+string(rune(e)))
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			buf = utf8.AppendRune(buf, r) // RuneError for invalid UTF-8
			p.pos += size
		}
	}
	return "", p.errorf("")
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.pos+4 > len(p.data) {
		return 0, false
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	p.pos += 4
	return r, true
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// YAML

type yamlReader struct {
	aliasNodes int // nodes added by expanding aliases
}

func yamlTree(data []byte) (*node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, syntaxError("empty document")
		}
		return nil, syntaxError("YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			return nil, syntaxError("YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, syntaxError("YAML: more than one document (line %d); put all rules in one array", extra.Line)
	}
	r := &yamlReader{}
	n, err := r.value(&doc, "", 0, false)
	if err != nil {
		return nil, err
	}
	if n.kind == kindNull {
		return nil, syntaxError("empty document")
	}
	return n, nil
}

// value converts y; aliased says y is reached through an alias.
func (r *yamlReader) value(y *yaml.Node, path string, depth int, aliased bool) (*node, error) {
	if depth > maxDepth {
		return nil, &FieldError{Path: path, Msg: "nested too deeply"}
	}
	if aliased {
		if r.aliasNodes++; r.aliasNodes > maxAliasNodes {
			return nil, &FieldError{Path: path, Msg: "YAML aliases expand to too many values"}
		}
	}
	switch y.Kind {
	case yaml.DocumentNode:
		if len(y.Content) == 0 {
			return &node{kind: kindNull}, nil
		}
		return r.value(y.Content[0], path, depth, aliased)
	case yaml.AliasNode:
		if y.Alias == nil {
			return nil, &FieldError{Path: path, Msg: "YAML alias without anchor"}
		}
		return r.value(y.Alias, path, depth+1, true)
	case yaml.MappingNode:
		n := &node{kind: kindObject}
		seen := map[string]bool{}
		for i := 0; i+1 < len(y.Content); i += 2 {
			k := y.Content[i]
			if k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, &FieldError{Path: path, Msg: "YAML mapping key that is not a scalar (line " + strconv.Itoa(k.Line) + ")"}
			}
			if k.ShortTag() == "!!merge" {
				return nil, &FieldError{Path: childPath(path, k.Value), Msg: "YAML merge keys are not supported"}
			}
			p := childPath(path, k.Value)
			if seen[k.Value] {
				return nil, &FieldError{Path: p, Msg: "duplicate key (line " + strconv.Itoa(k.Line) + ")"}
			}
			seen[k.Value] = true
			val, err := r.value(y.Content[i+1], p, depth+1, aliased)
			if err != nil {
				return nil, err
			}
			n.members = append(n.members, member{k.Value, val})
		}
		return n, nil
	case yaml.SequenceNode:
		n := &node{kind: kindArray}
		for _, c := range y.Content {
			val, err := r.value(c, indexPath(path, len(n.items)), depth+1, aliased)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, val)
		}
		return n, nil
	case yaml.ScalarNode:
		switch tag := y.ShortTag(); tag {
		case "!!null":
			return &node{kind: kindNull}, nil
		case "!!bool":
			b, err := strconv.ParseBool(y.Value)
			if err != nil {
				return &node{kind: kindString, text: y.Value}, nil
			}
			return &node{kind: kindBool, text: strconv.FormatBool(b)}, nil
		case "!!int", "!!float":
			return &node{kind: kindNumber, text: y.Value}, nil
		case "!!str", "!!timestamp", "!!binary":
			return &node{kind: kindString, text: y.Value}, nil
		default:
			return nil, &FieldError{Path: path, Msg: "unsupported YAML tag " + strconv.Quote(tag)}
		}
	}
	return nil, &FieldError{Path: path, Msg: "unsupported YAML node"}
}
