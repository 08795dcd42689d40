package persistence

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/core/msgcodec"
)

// Key layout. Every key starts with a one-letter kind and a slash, so that
// one prefix iteration finds every record of a kind:
//
//	x/<vhost>\x00<name>                                   exchange
//	q/<vhost>\x00<name>                                   queue
//	b/<vhost>\x00<source>\x00<e|q>\x00<dest>\x00<rkey>\x00<hash> binding
//	m/<id BE>                                             message (properties and body)
//	r/<vhost>\x00<queue>\x00<seq BE>                      message reference of a queue
//	d/<vhost>\x00<queue>                                  highest seq delivered
//	t/<vhost>\x00<topic>                                  retained MQTT message of a topic
//	!format                                               store format version
//	!running                                              present while a Store has the directory open
//
// A deleted exchange, queue, binding or retained message is an empty value
// (a "marker"), not a Badger tombstone: see markerKind.
//
// Names are written escaped (see appendName), so that a name holding NUL
// cannot run into the next field: "<vhost>\x00<queue>\x00" is then a prefix
// of exactly one queue's references. Names without 0x00 or 0x01 bytes (all
// the ones people use) are written as they are.
//
// Long names. A name longer than 255 bytes (longName) is written hashed:
// its first 32 bytes (escaped), 0x01 0x03, and the hex SHA-256 of the whole
// name, so that every key stays under some 2.6 KB, far below Badger's
// 65,000-byte limit, whatever a client names (an MQTT client id, topic or
// filter may have 65,535 bytes). The names such a key cannot give back are
// kept in full in its value (namedVersion, see appendNamed) for x/, q/, b/
// and t/ records; r/ and d/ records are found through their queue's key,
// whose value has the names. Stores written before hashed names hold
// their long names as they are; Open rewrites those keys into the hashed
// form (Store.migrateLong), so old data stays readable and one name
// never has two keys.
const (
	kindExchange  = 'x'
	kindQueue     = 'q'
	kindBinding   = 'b'
	kindMessage   = 'm'
	kindRef       = 'r'
	kindDelivered = 'd'
	kindRetained  = 't'
)

// markerKind reports whether keys of kind are deleted by writing an empty
// value instead of a tombstone. Badger's value-log GC writes a live value it
// moves back at its old version, above any newer tombstone; when compaction
// later drops the tombstone (it only looks for older data below it), the
// moved value is visible again. A marker is a value, which compaction
// never drops in favour of an older version, so a deleted exchange, queue,
// binding or retained message cannot come back. Records of these kinds can
// be large enough for the value log (a retained message nearly always is);
// references and delivered marks never are (they stay
// under valueThreshold, and GC only moves value-log entries), and message
// bodies brought back are found by the orphan sweep (Store.sweepChunk),
// since a marker per message would grow without bound.
func markerKind(kind byte) bool {
	return kind == kindExchange || kind == kindQueue || kind == kindBinding || kind == kindRetained
}

// formatKey holds the version of the layout above. It is written when a
// store is created, so that a Badger directory written by something else
// (or by a future, incompatible ferrymq) is refused instead of misread.
var formatKey = []byte("!format")

// runningKey is written (and synced) when a Store opens and deleted by
// its clean Close: found at Open, it says the last run crashed (or lost
// appends at Close), and that deliveries it made may not have reached
// their delivered marks. Stores written before it existed lack it, which
// reads as a clean shutdown, as they were then treated. Its value is empty.
var runningKey = []byte("!running")

// formatVersion is the layout described above.
const formatVersion = 1

// recordVersion starts every value, so that a later layout can tell its
// records from these.
const recordVersion = 1

// errCorrupt is wrapped by every decoding error: a record that does not
// parse was damaged on disk or written by something else.
var errCorrupt = errors.New("corrupt record")

func corrupt(what string, key []byte) error {
	return fmt.Errorf("%w: %s (key %q)", errCorrupt, what, key)
}

// longName is the longest name written into a key as it is: 255 bytes,
// AMQP's short-string limit, so that every AMQP name (exchange, queue,
// routing key) keeps the plain form. A longer name (an MQTT client id,
// topic or filter may have 65,535 bytes; a vhost any length) is written
// hashed (see appendName), so that no key comes near Badger's limit of
// 65,000 bytes whatever a client sends: a key the store cannot write
// would fail its whole batch, other clients' writes included.
const longName = 255

// hashedPrefix is how much of a long name its hashed form keeps, for
// people reading keys and for a rough key order.
const hashedPrefix = 32

// hashedMark follows the kept prefix in a hashed name: 0x01 0x03 is
// never produced by the escaping below, so a hashed name is never
// mistaken for a plain one, in old data or new.
var hashedMark = [2]byte{0x01, 0x03}

// keyForm says how a key holds its names.
type keyForm uint8

const (
	// formPlain: every name is written as it is (escaped).
	formPlain keyForm = iota
	// formHashed: at least one name is hashed; the record's value starts
	// with every name of the key in full (see appendNamed).
	formHashed
	// formLegacy: a name longer than longName written as it is, by a
	// ferrymq from before hashed names; Open rewrites such keys into the
	// hashed form (see Store.migrate).
	formLegacy
)

func (f keyForm) join(g keyForm) keyForm { return max(f, g) }

// appendName appends s to a key, then a 0x00 terminator. A name of at
// most longName bytes is escaped: 0x00 is written as 0x01 0x01 and 0x01
// as 0x01 0x02. A longer one is written as its first hashedPrefix bytes,
// escaped, hashedMark, and the hex SHA-256 of the whole name: at most 130
// bytes. Neither form holds 0x00 before its terminator, so the terminated
// form of one name is never a prefix of another's.
func appendName(b []byte, s string) []byte {
	if len(s) > longName {
		b = appendEscaped(b, s[:hashedPrefix])
		b = append(b, hashedMark[:]...)
		sum := sha256.Sum256([]byte(s))
		b = hex.AppendEncode(b, sum[:])
		return append(b, 0x00)
	}
	return append(appendEscaped(b, s), 0x00)
}

func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0x00:
			b = append(b, 0x01, 0x01)
		case 0x01:
			b = append(b, 0x01, 0x02)
		default:
			b = append(b, c)
		}
	}
	return b
}

// readName reads a name written by appendName from the start of b and
// returns it with the bytes after its terminator. A hashed name cannot be
// read back: it comes back as its key bytes, with form formHashed, and the
// record's value has it in full.
func readName(b []byte) (name string, form keyForm, rest []byte, ok bool) {
	escaped := false
	for i, c := range b {
		switch c {
		case 0x00:
			switch {
			case escaped && bytes.Contains(b[:i], hashedMark[:]):
				return string(b[:i]), formHashed, b[i+1:], true
			case escaped:
				name = unescape(b[:i])
			default:
				name = string(b[:i])
			}
			if len(name) > longName {
				form = formLegacy
			}
			return name, form, b[i+1:], true
		case 0x01:
			escaped = true
		}
	}
	return "", formPlain, b, false
}

func unescape(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == 0x01 && i+1 < len(b) {
			i++
			out = append(out, b[i]-1)
			continue
		}
		out = append(out, b[i])
	}
	return string(out)
}

// anyLong reports whether a key holding names has a hashed name.
func anyLong(names ...string) bool {
	for _, s := range names {
		if len(s) > longName {
			return true
		}
	}
	return false
}

// namedVersion starts the value of a record whose key has a hashed name:
// the key's names follow in full, in key order (uvarint count, then each
// as uvarint length and bytes), then the record's value as without them
// (its own version byte first). Records with plain keys never carry it,
// so the values of existing stores are unchanged.
const namedVersion = 2

func appendNamed(b []byte, names ...string) []byte {
	b = append(b, namedVersion)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, s := range names {
		b = appendString(b, s)
	}
	return b
}

// readNamed reads the n names written by appendNamed and returns them with
// the record's own value.
func readNamed(val []byte, n int) (names []string, inner []byte, ok bool) {
	if len(val) < 2 || val[0] != namedVersion {
		return nil, val, false
	}
	count, k := binary.Uvarint(val[1:])
	if k <= 0 || count != uint64(n) {
		return nil, val, false
	}
	rest := val[1+k:]
	names = make([]string, n)
	for i := range names {
		if names[i], rest, ok = readString(rest); !ok {
			return nil, val, false
		}
	}
	return names, rest, true
}

func kindPrefix(kind byte) []byte { return []byte{kind, '/'} }

// entityKey is the key of a vhost-scoped entity: x/, q/ and d/ keys, and
// (with the ref's seq appended) the prefix of a queue's r/ keys.
func entityKey(b []byte, kind byte, vhost, name string) []byte {
	b = append(b, kind, '/')
	b = appendName(b, vhost)
	return appendName(b, name)
}

// parseEntityKey splits an x/, q/, d/ or t/ key. With form formHashed, a
// hashed name comes back as its key bytes (see entityNames).
func parseEntityKey(key []byte) (vhost, name string, form keyForm, ok bool) {
	if len(key) < 2 {
		return "", "", formPlain, false
	}
	vhost, f1, rest, ok := readName(key[2:])
	if !ok {
		return "", "", formPlain, false
	}
	name, f2, rest, ok := readName(rest)
	return vhost, name, f1.join(f2), ok && len(rest) == 0
}

// entityNames returns the names of an x/, q/ or t/ record, from its key or,
// for a hashed key, from its value, and the value without them.
func entityNames(key, val []byte) (vhost, name string, inner []byte, form keyForm, ok bool) {
	vhost, name, form, ok = parseEntityKey(key)
	if !ok {
		return "", "", val, form, false
	}
	if form != formHashed {
		return vhost, name, val, form, true
	}
	names, inner, ok := readNamed(val, 2)
	if !ok || !bytes.Equal(entityKey(nil, key[0], names[0], names[1]), key) {
		return "", "", val, form, false
	}
	return names[0], names[1], inner, form, true
}

// named returns val as the value of a record whose key holds names: as it
// is, or (a name is hashed in the key) after the names in full.
func named(dst, val []byte, names ...string) []byte {
	if !anyLong(names...) {
		return val
	}
	return append(appendNamed(dst, names...), val...)
}

func refKey(b []byte, vhost, queue string, seq uint64) []byte {
	b = entityKey(b, kindRef, vhost, queue)
	return binary.BigEndian.AppendUint64(b, seq)
}

// parseRefKey splits an r/ key (hashed names as in parseEntityKey).
func parseRefKey(key []byte) (vhost, queue string, seq uint64, form keyForm, ok bool) {
	if len(key) < 2+8 {
		return "", "", 0, formPlain, false
	}
	vhost, queue, form, ok = parseEntityKey(key[:len(key)-8])
	return vhost, queue, binary.BigEndian.Uint64(key[len(key)-8:]), form, ok
}

func messageKey(b []byte, id uint64) []byte {
	b = append(b, kindMessage, '/')
	return binary.BigEndian.AppendUint64(b, id)
}

func parseMessageKey(key []byte) (uint64, bool) {
	if len(key) != 2+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[2:]), true
}

// bindingPrefix is the prefix of the bindings of vhost.
func bindingPrefix(vhost string) []byte {
	return appendName([]byte{kindBinding, '/'}, vhost)
}

// bindingKey identifies a binding by everything RabbitMQ compares: source,
// destination and its kind, routing key and arguments. The arguments go in
// as a hash of their encoding (msgcodec.AppendTable sorts keys, so it is
// deterministic); the full table is the value.
func bindingKey(b []byte, vhost string, r *core.BindingRecord, encodedArgs []byte) []byte {
	b = append(b, kindBinding, '/')
	b = appendName(b, vhost)
	b = appendName(b, r.Source)
	if r.ToExchange {
		b = append(b, 'e', 0x00)
	} else {
		b = append(b, 'q', 0x00)
	}
	b = appendName(b, r.Destination)
	b = appendName(b, r.RoutingKey)
	h := fnv.New64a()
	h.Write(encodedArgs)
	return binary.BigEndian.AppendUint64(b, h.Sum64())
}

// parseBindingKey splits a b/ key; the arguments come from the value, and
// so do hashed names (see decodeBinding).
func parseBindingKey(key []byte) (vhost string, r core.BindingRecord, form keyForm, ok bool) {
	if len(key) < 2 {
		return "", r, form, false
	}
	rest := key[2:]
	var f keyForm
	if vhost, form, rest, ok = readName(rest); !ok {
		return "", r, form, false
	}
	if r.Source, f, rest, ok = readName(rest); !ok {
		return "", r, form, false
	}
	form = form.join(f)
	if len(rest) < 2 || rest[1] != 0x00 || (rest[0] != 'e' && rest[0] != 'q') {
		return "", r, form, false
	}
	r.ToExchange = rest[0] == 'e'
	if r.Destination, f, rest, ok = readName(rest[2:]); !ok {
		return "", r, form, false
	}
	form = form.join(f)
	if r.RoutingKey, f, rest, ok = readName(rest); !ok {
		return "", r, form, false
	}
	return vhost, r, form.join(f), len(rest) == 8
}

// appendArgs appends an argument table in msgcodec's field-table encoding
// (AMQP's), which keeps every value's type tag (RabbitMQ compares arguments
// by type and value).
func appendArgs(b []byte, t core.Table) ([]byte, error) {
	return msgcodec.AppendTable(b, t)
}

// readArgs reads a table written by appendArgs; an empty table reads back
// as nil.
func readArgs(b []byte) (core.Table, []byte, error) {
	t, rest, err := msgcodec.ReadTable(b)
	if err != nil {
		return nil, b, err
	}
	if len(t) == 0 {
		t = nil
	}
	return t, rest, nil
}

// Exchange value: version, flags, kind (uvarint length and bytes), args.
const (
	exDurable    = 1 << 0
	exAutoDelete = 1 << 1
	exInternal   = 1 << 2
)

func encodeExchange(b []byte, d *core.ExchangeDecl) ([]byte, error) {
	var flags byte
	if d.Durable {
		flags |= exDurable
	}
	if d.AutoDelete {
		flags |= exAutoDelete
	}
	if d.Internal {
		flags |= exInternal
	}
	b = append(b, recordVersion, flags)
	b = appendString(b, d.Kind)
	return appendArgs(b, d.Arguments)
}

func decodeExchange(key, val []byte) (vhost string, d core.ExchangeDecl, err error) {
	var ok bool
	vhost, d.Name, val, _, ok = entityNames(key, val)
	if !ok || len(val) < 2 || val[0] != recordVersion {
		return "", d, corrupt("exchange", key)
	}
	flags := val[1]
	d.Durable = flags&exDurable != 0
	d.AutoDelete = flags&exAutoDelete != 0
	d.Internal = flags&exInternal != 0
	rest := val[2:]
	if d.Kind, rest, ok = readString(rest); !ok {
		return "", d, corrupt("exchange kind", key)
	}
	if d.Arguments, rest, err = readArgs(rest); err != nil || len(rest) != 0 {
		return "", d, corrupt(fmt.Sprintf("exchange arguments: %v", err), key)
	}
	return vhost, d, nil
}

// Queue value: version, flags, last used (int64 BE), args.
const qAutoDelete = 1 << 0

func encodeQueue(b []byte, r *core.QueueRecord) ([]byte, error) {
	var flags byte
	if r.AutoDelete {
		flags |= qAutoDelete
	}
	b = append(b, recordVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(r.LastUsed))
	return appendArgs(b, r.Arguments)
}

func decodeQueue(key, val []byte) (r core.QueueRecord, err error) {
	var ok bool
	r.VHost, r.Name, val, _, ok = entityNames(key, val)
	if !ok || len(val) < 2+8 || val[0] != recordVersion {
		return r, corrupt("queue", key)
	}
	r.AutoDelete = val[1]&qAutoDelete != 0
	r.LastUsed = int64(binary.BigEndian.Uint64(val[2:]))
	var rest []byte
	if r.Arguments, rest, err = readArgs(val[10:]); err != nil || len(rest) != 0 {
		return r, corrupt(fmt.Sprintf("queue arguments: %v", err), key)
	}
	return r, nil
}

// Binding value: version, args. The arguments' encoding is also hashed
// into the key (see bindingKey), so the key is built from the value. A key
// with a hashed name has its vhost, source, destination and routing key
// before that (see appendNamed).
func encodeBinding(b []byte, r *core.BindingRecord) ([]byte, error) {
	return appendArgs(append(b, recordVersion), r.Arguments)
}

func decodeBinding(key, val []byte) (vhost string, r core.BindingRecord, err error) {
	vhost, r, form, ok := parseBindingKey(key)
	if ok && form == formHashed {
		var names []string
		if names, val, ok = readNamed(val, 4); ok {
			vhost, r.Source, r.Destination, r.RoutingKey = names[0], names[1], names[2], names[3]
			ok = len(val) > 0 && bytes.Equal(bindingKey(nil, vhost, &r, val[1:]), key)
		}
	}
	if !ok || len(val) < 1 || val[0] != recordVersion {
		return "", r, corrupt("binding", key)
	}
	var rest []byte
	if r.Arguments, rest, err = readArgs(val[1:]); err != nil || len(rest) != 0 {
		return "", r, corrupt(fmt.Sprintf("binding arguments: %v", err), key)
	}
	return vhost, r, nil
}

// Delivered mark value: the queue's highest delivered seq (8 BE), with no
// version byte.
func encodeDelivered(b []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(b, seq)
}

func decodeDelivered(val []byte) (seq uint64, ok bool) {
	if len(val) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(val), true
}

// ref is the value of an r/ key: what recovery needs to rebuild a queue
// entry without reading the message.
type ref struct {
	id       uint64
	size     int
	priority uint8
	deadline int64
}

// Ref value: version, id (8 BE), priority, size (uvarint), deadline
// (varint). Some 15 bytes, so that it stays in the LSM tree (under
// valueThreshold) and recovery never touches the value log.
func encodeRef(b []byte, r ref) []byte {
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, r.id)
	b = append(b, r.priority)
	b = binary.AppendUvarint(b, uint64(r.size))
	return binary.AppendVarint(b, r.deadline)
}

func decodeRef(val []byte) (r ref, ok bool) {
	if len(val) < 1+8+1 || val[0] != recordVersion {
		return r, false
	}
	r.id = binary.BigEndian.Uint64(val[1:])
	r.priority = val[9]
	rest := val[10:]
	size, n := binary.Uvarint(rest)
	if n <= 0 || size > 1<<40 {
		return r, false
	}
	r.size = int(size)
	rest = rest[n:]
	if r.deadline, n = binary.Varint(rest); n <= 0 || n != len(rest) {
		return r, false
	}
	return r, true
}

// Message value: version, flags (bit 0: Published is set), Published
// (UnixNano, 8 BE), exchange and routing key (uvarint length and bytes),
// the properties block (uvarint length, then class 60 (2 BE), weight 0
// (2 BE), body size (8 BE), and the properties in msgcodec's encoding),
// then the body. The properties block is laid out as an AMQP content header
// because it was one, written by amqp/wire, when this format was made; its
// class, weight and body size are kept and checked so that the format stays
// what it was. The properties and their headers table come back byte-exact.
const (
	msgPublished = 1 << 0
	// msgClass and msgWeight are the content header's class-id (basic)
	// and weight; msgFixed is their size with the body size's.
	msgClass  = 60
	msgWeight = 0
	msgFixed  = 2 + 2 + 8
)

func encodeMessage(b []byte, m *core.Message) ([]byte, error) {
	var flags byte
	var published int64
	if !m.Published.IsZero() {
		flags |= msgPublished
		published = m.Published.UnixNano()
	}
	b = append(b, recordVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(published))
	b = appendString(b, m.Exchange)
	b = appendString(b, m.RoutingKey)
	// The block's length is not known before it is written: reserve the
	// longest uvarint, then move the block down over the unused bytes.
	lenAt := len(b)
	b = append(b, make([]byte, binary.MaxVarintLen64)...)
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, msgClass)
	b = binary.BigEndian.AppendUint16(b, msgWeight)
	b = binary.BigEndian.AppendUint64(b, uint64(len(m.Body)))
	b, err := msgcodec.AppendProperties(b, &m.Properties)
	if err != nil {
		// core only stores tables it decoded or built from the mapped
		// types; a stray one fails this message, not the store.
		return b, fmt.Errorf("message %d: properties cannot be encoded: %w", m.ID, err)
	}
	hlen := len(b) - start
	var tmp [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(tmp[:], uint64(hlen))
	copy(b[lenAt:], tmp[:n])
	copy(b[lenAt+n:], b[start:])
	b = b[:lenAt+n+hlen]
	return append(b, m.Body...), nil
}

func decodeMessage(id uint64, val []byte) (*core.Message, error) {
	if len(val) < 2+8 || val[0] != recordVersion {
		return nil, fmt.Errorf("%w: message %d", errCorrupt, id)
	}
	m := &core.Message{ID: id}
	if val[1]&msgPublished != 0 {
		m.Published = time.Unix(0, int64(binary.BigEndian.Uint64(val[2:])))
	}
	rest := val[10:]
	var ok bool
	if m.Exchange, rest, ok = readString(rest); !ok {
		return nil, fmt.Errorf("%w: message %d: exchange", errCorrupt, id)
	}
	if m.RoutingKey, rest, ok = readString(rest); !ok {
		return nil, fmt.Errorf("%w: message %d: routing key", errCorrupt, id)
	}
	hlen, n := binary.Uvarint(rest)
	if n <= 0 || hlen > uint64(len(rest)-n) || hlen < msgFixed {
		return nil, fmt.Errorf("%w: message %d: properties length", errCorrupt, id)
	}
	header := rest[n : n+int(hlen)]
	body := rest[n+int(hlen):]
	class, weight := binary.BigEndian.Uint16(header), binary.BigEndian.Uint16(header[2:])
	if size := binary.BigEndian.Uint64(header[4:]); class != msgClass || weight != msgWeight || size != uint64(len(body)) {
		return nil, fmt.Errorf("%w: message %d: properties say class %d, weight %d, %d body bytes; %d stored",
			errCorrupt, id, class, weight, size, len(body))
	}
	props, err := msgcodec.ReadProperties(header[msgFixed:])
	if err != nil {
		return nil, fmt.Errorf("%w: message %d: %v", errCorrupt, id, err)
	}
	m.Properties = props
	// The value is only valid inside Badger's callback; the message outlives it.
	m.Body = append([]byte(nil), body...)
	return m, nil
}

// Retained message value: version, the message's id (8 BE), then the
// message value above (its own version byte included). The id is kept so
// that the message comes back as it was stored, and counts towards
// MaxMessageID, so that no id handed out after a restart is a retained
// message's.
func encodeRetained(b []byte, m *core.Message) ([]byte, error) {
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, m.ID)
	return encodeMessage(b, m)
}

// retainedID reads the id of a retained message value without decoding the
// rest.
func retainedID(val []byte) (uint64, bool) {
	if len(val) < 1+8+1 || val[0] != recordVersion {
		return 0, false
	}
	return binary.BigEndian.Uint64(val[1:]), true
}

func decodeRetained(key, val []byte) (vhost, topic string, m *core.Message, err error) {
	vhost, topic, val, _, ok := entityNames(key, val)
	if !ok {
		return "", "", nil, corrupt("retained message key", key)
	}
	id, ok := retainedID(val)
	if !ok {
		return "", "", nil, corrupt("retained message", key)
	}
	if m, err = decodeMessage(id, val[1+8:]); err != nil {
		return "", "", nil, fmt.Errorf("%w (key %q)", err, key)
	}
	return vhost, topic, m, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func readString(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", b, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}
