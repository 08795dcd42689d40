package wire

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/core/msgcodec"
)

// fillNonZero sets every field of the struct m points to a non-zero value.
// Bools alternate starting with true, so a bit written to the wrong position
// changes the decoded value.
func fillNonZero(m any) {
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(i%2 == 0)
		case reflect.Uint8:
			f.SetUint(0xA5)
		case reflect.Uint16:
			f.SetUint(0xBEEF)
		case reflect.Uint32:
			f.SetUint(0xDEADBEEF)
		case reflect.Uint64:
			f.SetUint(0x0123456789ABCDEF)
		case reflect.String:
			f.SetString("value of " + v.Type().Field(i).Name)
		case reflect.Map:
			f.Set(reflect.ValueOf(allTypesTable))
		default:
			panic("unhandled field kind " + f.Kind().String())
		}
	}
}

// TestMethodRoundTrip covers every method of the spec: non-zero fields go
// through AppendMethodFrame, Reader, DecodeMethod and back to the same bytes.
func TestMethodRoundTrip(t *testing.T) {
	if len(methodIDs) < 60 {
		t.Fatalf("only %d methods generated", len(methodIDs))
	}
	content := map[string]bool{"basic.publish": true, "basic.return": true, "basic.deliver": true, "basic.get-ok": true}
	var buf []byte
	for _, id := range methodIDs {
		name := MethodName(id[0], id[1])
		t.Run(name, func(t *testing.T) {
			m := newMethod(id[0], id[1])
			if c, mid := m.ID(); c != id[0] || mid != id[1] {
				t.Fatalf("ID() = %d, %d", c, mid)
			}
			if m.HasContent() != content[name] {
				t.Fatalf("HasContent() = %v", m.HasContent())
			}
			fillNonZero(m)
			buf = AppendMethodFrame(buf[:0], 7, m)
			r := NewReader(bytes.NewReader(buf))
			f, err := r.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != FrameMethod || f.Channel != 7 {
				t.Fatalf("frame %d on channel %d", f.Type, f.Channel)
			}
			got, err := DecodeMethod(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("decoded\n%#v\nwant\n%#v", got, m)
			}
			if again := AppendMethod(nil, got); !bytes.Equal(again, f.Payload) {
				t.Fatalf("re-encoded\n% x\nwant\n% x", again, f.Payload)
			}
			// Every strict prefix of the arguments is malformed, never a panic.
			for n := 4; n < len(f.Payload); n++ {
				if _, err := DecodeMethod(f.Payload[:n]); !errors.Is(err, ErrMalformed) {
					t.Fatalf("prefix of %d bytes: %v", n, err)
				}
			}
		})
	}
}

func TestMethodNameUnknown(t *testing.T) {
	if got := MethodName(60, 999); got != "method 60.999" {
		t.Fatal(got)
	}
	if got := MethodName(ClassConfirm, 11); got != "confirm.select-ok" {
		t.Fatal(got)
	}
}

func TestShortstrTruncatedAtRuneBoundary(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 200)) // 400 bytes
	b := AppendMethod(nil, &ChannelClose{ReplyCode: NotFound, ReplyText: long})
	m, err := DecodeMethod(b)
	if err != nil {
		t.Fatal(err)
	}
	text := m.(*ChannelClose).ReplyText
	if len(text) != 254 || text != long[:254] {
		t.Fatalf("got %d bytes", len(text))
	}
}

func TestAppendPanicsOnUnencodableTable(t *testing.T) {
	defer func() {
		err, _ := recover().(error)
		if !errors.Is(err, msgcodec.ErrUnencodable) {
			t.Fatalf("recovered %v", err)
		}
	}()
	AppendMethod(nil, &QueueDeclare{Arguments: core.Table{"bad": struct{}{}}})
	t.Fatal("no panic")
}

// TestGeneratedCodeIsCurrent regenerates spec091.go and fails if the
// committed file differs: the check amqp091-go's CI lacks.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out := filepath.Join(t.TempDir(), "spec091.go")
	cmd := exec.Command(goTool, "run", "gen.go", "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("spec091.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("spec091.go is stale: run go generate ./amqp/wire/")
	}
}
