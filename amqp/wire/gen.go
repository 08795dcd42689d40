//go:build ignore

// gen renders spec091.go, the AMQP 0-9-1 method codec, from the spec XML
// that ships in the amqp091-go module (spec/amqp0-9-1.stripped.extended.xml,
// which includes RabbitMQ's extensions). Run it with go generate in
// amqp/wire; TestGeneratedCodeIsCurrent fails when the committed output is
// stale.
//
// The spec's fiddly rules live here, once: domains resolve to wire types,
// consecutive bit fields pack LSB-first into one octet (at most eight to an
// octet), reserved fields are kept as ReservedN so encoding is byte-exact.
package main

import (
	"bytes"
	"encoding/xml"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
)

const specModule = "github.com/rabbitmq/amqp091-go"

func main() {
	log.SetFlags(0)
	log.SetPrefix("gen: ")
	out := flag.String("o", "spec091.go", "output file")
	specPath := flag.String("spec", "", "spec XML (default: located in the "+specModule+" module)")
	flag.Parse()

	if *specPath == "" {
		dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", specModule).Output()
		if err != nil {
			log.Fatalf("locating %s (is it in go.mod and the module cache?): %v", specModule, err)
		}
		*specPath = filepath.Join(strings.TrimSpace(string(dir)), "spec", "amqp0-9-1.stripped.extended.xml")
	}
	raw, err := os.ReadFile(*specPath)
	if err != nil {
		log.Fatal(err)
	}
	var s xmlSpec
	if err := xml.Unmarshal(raw, &s); err != nil {
		log.Fatalf("%s: %v", *specPath, err)
	}
	data, err := build(&s)
	if err != nil {
		log.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		log.Fatal(err)
	}
	src, err := format.Source(buf.Bytes())
	if err != nil {
		os.Stderr.Write(buf.Bytes())
		log.Fatalf("gofmt: %v", err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}

type xmlSpec struct {
	Major     int           `xml:"major,attr"`
	Minor     int           `xml:"minor,attr"`
	Revision  int           `xml:"revision,attr"`
	Constants []xmlConstant `xml:"constant"`
	Domains   []xmlDomain   `xml:"domain"`
	Classes   []xmlClass    `xml:"class"`
}

type xmlConstant struct {
	Name  string `xml:"name,attr"`
	Value int    `xml:"value,attr"`
	Class string `xml:"class,attr"`
}

type xmlDomain struct {
	Name string `xml:"name,attr"`
	Type string `xml:"type,attr"`
}

type xmlClass struct {
	Name    string      `xml:"name,attr"`
	Index   int         `xml:"index,attr"`
	Methods []xmlMethod `xml:"method"`
}

type xmlMethod struct {
	Name        string        `xml:"name,attr"`
	Index       int           `xml:"index,attr"`
	Content     int           `xml:"content,attr"`
	Synchronous int           `xml:"synchronous,attr"`
	Deprecated  int           `xml:"deprecated,attr"`
	Responses   []xmlResponse `xml:"response"`
	Fields      []xmlField    `xml:"field"`
}

type xmlResponse struct {
	Name string `xml:"name,attr"`
}

type xmlField struct {
	Name     string `xml:"name,attr"`
	Domain   string `xml:"domain,attr"`
	Type     string `xml:"type,attr"`
	Reserved int    `xml:"reserved,attr"`
}

// Template data.
type (
	specData struct {
		Version    string
		Constants  []constData
		Classes    []classData
		Methods    []*methodData
		HardCodes  []string
		NeedsTable bool
	}
	constData struct {
		GoName, WireName string
		Value            int
		Hard             bool
	}
	classData struct {
		GoName, WireName string
		Index            int
	}
	methodData struct {
		GoName, FullName, ClassConst string
		ClassIndex, Index            int
		Content, Synchronous         bool
		Deprecated                   bool
		Replies                      []string
		Fields                       []fieldData
		Steps                        []step
		HasBits                      bool
	}
	fieldData struct {
		GoName, WireName, GoType, Comment string
	}
	// step is one unit of the wire layout: a single field, or a group of
	// consecutive bits sharing one octet.
	step struct {
		Field fieldData
		Wire  string // wire type; "bits" for a group
		Bits  []fieldData
	}
)

var goTypes = map[string]string{
	"bit":      "bool",
	"octet":    "uint8",
	"short":    "uint16",
	"long":     "uint32",
	"longlong": "uint64",
	"shortstr": "string",
	"longstr":  "string",
	"table":    "core.Table",
	// timestamp is left out: no 0-9-1 method argument is one (only the
	// timestamp property, in core/msgcodec), so a spec that had one would
	// fail here rather than generate code this package cannot compile.
}

func build(s *xmlSpec) (*specData, error) {
	d := &specData{Version: fmt.Sprintf("%d-%d-%d", s.Major, s.Minor, s.Revision)}
	domains := map[string]string{}
	for _, dom := range s.Domains {
		domains[dom.Name] = dom.Type
	}
	for _, c := range s.Constants {
		// Reply codes are the constants with an error class, plus
		// reply-success; frame types and sizes are written by hand.
		if c.Class == "" && c.Name != "reply-success" {
			continue
		}
		if c.Class == "hard-error" {
			d.HardCodes = append(d.HardCodes, goName(c.Name))
		}
		d.Constants = append(d.Constants, constData{
			GoName: goName(c.Name), WireName: strings.ToUpper(strings.ReplaceAll(c.Name, "-", "_")),
			Value: c.Value, Hard: c.Class == "hard-error",
		})
	}
	seen := map[[2]int]string{}
	for _, c := range s.Classes {
		cd := classData{GoName: "Class" + goName(c.Name), WireName: c.Name, Index: c.Index}
		d.Classes = append(d.Classes, cd)
		for _, m := range c.Methods {
			full := c.Name + "." + m.Name
			if prev, dup := seen[[2]int{c.Index, m.Index}]; dup {
				return nil, fmt.Errorf("%s and %s share ids %d/%d", prev, full, c.Index, m.Index)
			}
			seen[[2]int{c.Index, m.Index}] = full
			md := &methodData{
				GoName: goName(c.Name) + goName(m.Name), FullName: full, ClassConst: cd.GoName,
				ClassIndex: c.Index, Index: m.Index,
				Content: m.Content == 1, Synchronous: m.Synchronous == 1, Deprecated: m.Deprecated == 1,
			}
			for _, r := range m.Responses {
				md.Replies = append(md.Replies, c.Name+"."+r.Name)
			}
			for _, f := range m.Fields {
				wire := f.Type
				if wire == "" {
					wire = domains[f.Domain]
				}
				// A domain may be defined in terms of another domain.
				for i := 0; i < 4 && goTypes[wire] == ""; i++ {
					wire = domains[wire]
				}
				goType, ok := goTypes[wire]
				if !ok {
					return nil, fmt.Errorf("%s field %s: cannot resolve domain %q", full, f.Name, f.Domain)
				}
				d.NeedsTable = d.NeedsTable || wire == "table"
				comment := f.Name
				if f.Reserved == 1 {
					comment += ": reserved, kept so that encoding is byte-exact"
				}
				fd := fieldData{GoName: goName(f.Name), WireName: f.Name, GoType: goType, Comment: comment}
				md.Fields = append(md.Fields, fd)
				last := len(md.Steps) - 1
				switch {
				case wire == "bit" && last >= 0 && md.Steps[last].Wire == "bits" && len(md.Steps[last].Bits) < 8:
					md.Steps[last].Bits = append(md.Steps[last].Bits, fd)
				case wire == "bit":
					md.Steps = append(md.Steps, step{Wire: "bits", Bits: []fieldData{fd}})
					md.HasBits = true
				default:
					md.Steps = append(md.Steps, step{Field: fd, Wire: wire})
				}
			}
			d.Methods = append(d.Methods, md)
		}
	}
	return d, nil
}

// goName turns an XML name into Go CamelCase: reply-code → ReplyCode,
// class-id → ClassID, nowait → NoWait, reserved-1 → Reserved1.
func goName(s string) string {
	var b strings.Builder
	for _, part := range strings.Split(s, "-") {
		switch part {
		case "":
		case "id":
			b.WriteString("ID")
		case "nowait":
			b.WriteString("NoWait")
		default:
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

var funcs = template.FuncMap{
	"title": func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
	"join2": func(s []string) string { return strings.Join(s, ", ") },
	"join": func(s []string) string {
		switch len(s) {
		case 0:
			return ""
		case 1:
			return s[0]
		}
		return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
	},
}

var tmpl = template.Must(template.New("spec").Funcs(funcs).Parse(`// Code generated by gen.go from the AMQP 0-9-1 spec XML; DO NOT EDIT.

package wire

{{if .NeedsTable}}import (
	"github.com/ferrymq/ferrymq/core"
)
{{end}}

// Reply codes of AMQP {{.Version}}, for connection.close and channel.close.
const (
{{- range .Constants}}
	{{.GoName}} uint16 = {{.Value}} // {{.WireName}}{{if .Hard}}, hard error{{end}}
{{- end}}
)

// ReplyCodeName returns the spec's name of a reply code, such as "NOT_FOUND",
// which RabbitMQ puts at the front of reply texts; "" if code is not one.
func ReplyCodeName(code uint16) string {
	switch code {
{{- range .Constants}}
	case {{.GoName}}:
		return "{{.WireName}}"
{{- end}}
	}
	return ""
}

// IsHardError reports whether the spec classes code as a hard error, one that
// closes the connection (connection.close) rather than just the channel
// (channel.close).
func IsHardError(code uint16) bool {
	switch code {
	case {{join2 .HardCodes}}:
		return true
	}
	return false
}

// Class ids.
const (
{{- range .Classes}}
	{{.GoName}} uint16 = {{.Index}}
{{- end}}
)

{{range .Methods}}
// {{.GoName}} is {{.FullName}} (class {{.ClassIndex}}, method {{.Index}}).
{{- if .Content}} It is followed by a content header and body.{{end}}
{{- if .Replies}} Its reply is {{join .Replies}}.{{end}}
{{- if .Deprecated}} The spec deprecates it.{{end}}
{{- if .Fields}}
type {{.GoName}} struct {
{{- range .Fields}}
	{{.GoName}} {{.GoType}} // {{.Comment}}
{{- end}}
}
{{- else}}
type {{.GoName}} struct{}
{{- end}}

// ID returns the class and method ids of {{.FullName}}.
func (*{{.GoName}}) ID() (classID, methodID uint16) { return {{.ClassConst}}, {{.Index}} }

// HasContent reports whether {{.FullName}} is followed by a content header and body.
func (*{{.GoName}}) HasContent() bool { return {{.Content}} }

// Append appends the arguments of {{.FullName}} (no ids) to b.
func (m *{{.GoName}}) Append(b []byte) []byte {
{{- if .HasBits}}
	var bits uint8
{{- end}}
{{- range .Steps}}
{{- if eq .Wire "bits"}}
	bits = 0
{{- range $i, $f := .Bits}}
	if m.{{$f.GoName}} {
		bits |= 1 << {{$i}}
	}
{{- end}}
	b = append(b, bits)
{{- else if eq .Wire "octet"}}
	b = append(b, m.{{.Field.GoName}})
{{- else if eq .Wire "table"}}
	b = appendTableInArgs(b, m.{{.Field.GoName}})
{{- else}}
	b = append{{title .Wire}}(b, m.{{.Field.GoName}})
{{- end}}
{{- end}}
	return b
}

// Decode sets m from the arguments of {{.FullName}}: the method frame payload
// after the class and method ids. Strings and tables are copied, so args may
// be reused afterwards.
func (m *{{.GoName}}) Decode(args []byte) error {
	d := decoder{b: args}
{{- if .HasBits}}
	var bits uint8
{{- end}}
{{- range .Steps}}
{{- if eq .Wire "bits"}}
	bits = d.octet()
{{- range $i, $f := .Bits}}
	m.{{$f.GoName}} = bits&(1<<{{$i}}) != 0
{{- end}}
{{- else}}
	m.{{.Field.GoName}} = d.{{.Wire}}()
{{- end}}
{{- end}}
	d.end()
	if d.err != nil {
		return d.err.inMethod({{.ClassConst}}, {{.Index}})
	}
	return nil
}
{{end}}

// MethodName returns the spec name of a method, such as "basic.publish", for
// error texts; unknown ids give "method <class>.<method>".
func MethodName(classID, methodID uint16) string {
	switch uint32(classID)<<16 | uint32(methodID) {
{{- range .Methods}}
	case {{.ClassIndex}}<<16 | {{.Index}}:
		return "{{.FullName}}"
{{- end}}
	}
	return "method " + itoa(int(classID)) + "." + itoa(int(methodID))
}

// newMethod returns a new zero method for the ids, or nil if there is none.
func newMethod(classID, methodID uint16) methodCodec {
	switch uint32(classID)<<16 | uint32(methodID) {
{{- range .Methods}}
	case {{.ClassIndex}}<<16 | {{.Index}}:
		return new({{.GoName}})
{{- end}}
	}
	return nil
}

// methodIDs lists every method of the spec, in spec order.
var methodIDs = [...][2]uint16{
{{- range .Methods}}
	{ {{- .ClassConst}}, {{.Index -}} },
{{- end}}
}
`))
