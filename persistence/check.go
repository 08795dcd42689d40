package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

// A damaged data directory. Badger checks little when it opens: a table
// file cut short makes it panic in a goroutine of its own (which no
// recover can catch), a table whose checksum fails is skipped with a log
// line and its keys silently gone, a MANIFEST cut short makes it delete
// the tables the lost records listed, and a missing or damaged value-log
// file shows only when a value is read. So Open checks first
// (checkFiles), before Badger sees the directory, and reads every message
// and retained value back once Badger has it open (Store.load): any damage
// is an error naming the file, or, with Options.Repair, what cannot be read
// is dropped and reported exactly (Store.Repair).

// ErrDamaged is wrapped by the errors of Open for a data directory whose
// files are damaged.
var ErrDamaged = errors.New("persistence: data directory damaged")

// checkFiles checks the MANIFEST and every table file it lists, without
// writing anything.
func checkFiles(dir string, o badger.Options, repair bool, log func(msg string, args ...any)) (dropped map[string]uint64, err error) {
	manifest := filepath.Join(dir, badgerManifest)
	f, err := os.Open(manifest)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // a new store (checkDir refused a directory without one)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, manifest, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, manifest, err)
	}
	m, end, err := replayManifest(f, o)
	if err != nil {
		return nil, fmt.Errorf("%w: %s cannot be read (%v): the list of the store's tables is lost; restore the data directory from a backup",
			ErrDamaged, manifest, err)
	}
	torn := end < fi.Size()

	onDisk := map[uint64]bool{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("persistence: read %s: %w", dir, err)
	}
	for _, e := range entries {
		if id, ok := table.ParseFileID(e.Name()); ok && strings.HasSuffix(e.Name(), ".sst") {
			onDisk[id] = true
		}
	}
	var missing []string
	var maxListed uint64
	for id := range m.Tables {
		maxListed = max(maxListed, id)
		if !onDisk[id] {
			missing = append(missing, table.IDToFilename(id))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("%w: %s lists table files that are missing: %s; restore the data directory from a backup",
			ErrDamaged, manifest, strings.Join(missing, ", "))
	}
	// Table files the MANIFEST does not list are deleted by Badger. A kill
	// between writing a table and recording it leaves the newest ones
	// (their data is still in the memtable log); older ones, or any with a
	// MANIFEST that ends in a partial record, mean records were lost.
	var unlisted []string
	suspect := false
	for id := range onDisk {
		if _, ok := m.Tables[id]; !ok {
			unlisted = append(unlisted, table.IDToFilename(id))
			suspect = suspect || torn || id < maxListed
		}
	}
	slices.Sort(unlisted)
	switch {
	case suspect && !repair:
		return nil, fmt.Errorf("%w: %s is damaged (%d of its %d bytes read) and does not list table files %s, which Badger would delete with what they hold; start with --repair to accept that loss, or restore the data directory from a backup",
			ErrDamaged, manifest, end, fi.Size(), strings.Join(unlisted, ", "))
	case suspect:
		log("repair: MANIFEST damaged; table files it does not list are dropped with their data",
			"manifest", manifest, "bytes_read", end, "size", fi.Size(), "tables", strings.Join(unlisted, ", "))
		// What they hold is counted, so that the loss can be reported
		// once Badger has dropped them (Store.countDropped).
		dropped = map[string]uint64{}
		for _, name := range unlisted {
			if err := tableKeys(filepath.Join(dir, name), o, dropped); err != nil {
				log("repair: a dropped table cannot be read: its loss is not counted", "table", name, "err", err)
			}
		}
	case len(unlisted) > 0:
		log("table files left by an interrupted flush or compaction are deleted", "tables", strings.Join(unlisted, ", "))
	}

	if err := checkLastValueLog(dir, repair, log); err != nil {
		return nil, err
	}
	if err := checkMemtableLogs(dir, repair, log); err != nil {
		return nil, err
	}

	ids := make([]uint64, 0, len(m.Tables))
	for id := range m.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		path := table.NewFilename(id, dir)
		if err := checkTable(path, o, m.Tables[id].Compression); err != nil {
			return nil, fmt.Errorf("%w: table file %s is damaged (%v); a table cannot be repaired: restore the data directory from a backup",
				ErrDamaged, path, err)
		}
	}
	return dropped, nil
}

// checkLastValueLog checks the newest value-log file the way Badger reads
// it at open, entry by entry up to the first that fails: Badger truncates
// the file there, for good, taking every later entry with it, which is
// right for a write torn by a crash (a partial entry, then zeros) and a
// silent loss for flipped bytes in the middle. So data after the failed
// entry, beyond what the entry itself claims, refuses the start (unless
// repair) before Badger truncates anything.
func checkLastValueLog(dir string, repair bool, log func(msg string, args ...any)) error {
	sizes := vlogSizes(dir)
	var last uint32
	found := false
	for fid := range sizes {
		if !found || fid > last {
			last, found = fid, true
		}
	}
	if !found {
		return nil
	}
	path := vlogName(dir, last)
	off, size, damaged, err := checkLogFile(path)
	if err != nil || !damaged {
		return err
	}
	if repair {
		log("repair: the newest value-log file is damaged; Badger truncates it at the first bad entry",
			"file", path, "offset", off, "size", size)
		return nil
	}
	return fmt.Errorf("%w: value-log file %s is damaged at byte %d of %d (Badger would cut it there, losing what follows); start with --repair to accept that loss, or restore the data directory from a backup",
		ErrDamaged, path, off, size)
}

// checkMemtableLogs checks the memtable logs (*.mem, the write-ahead log
// of what is not in a table yet) as checkLastValueLog the value log: Badger
// replays each up to its first bad entry and truncates it there.
func checkMemtableLogs(dir string, repair bool, log func(msg string, args ...any)) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("persistence: read %s: %w", dir, err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		off, size, damaged, err := checkLogFile(path)
		switch {
		case err != nil:
			return err
		case !damaged:
		case repair:
			// What the rest held is not counted: those writes never
			// reached a table, and the log cannot be read past the damage.
			log("repair: a memtable log is damaged; Badger replays it only up to the damage, and what it held after that is lost uncounted",
				"file", path, "offset", off, "size", size)
		default:
			return fmt.Errorf("%w: memtable log %s is damaged at byte %d of %d (Badger would replay it only up to there and lose what follows); start with --repair to accept that loss, or restore the data directory from a backup",
				ErrDamaged, path, off, size)
		}
	}
	return nil
}

// checkLogFile reads a value-log or memtable-log file entry by entry, as
// Badger replays it, and reports where that stops and whether data follows
// there beyond what the failed entry claims: damage, not the end or a write
// torn by a crash (a partial entry, then zeros: the files are
// preallocated).
func checkLogFile(path string) (off int, size int64, damaged bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false, fmt.Errorf("%w: %s: %v", ErrDamaged, path, err)
	}
	const headerSize = 20 // vlogHeaderSize: key id and IV
	off = headerSize
	if len(data) < off {
		return off, int64(len(data)), false, nil
	}
	extent := 0 // bytes the failed entry claims, when its header reads
	for off < len(data) {
		n, claimed, ok := vlogEntry(data[off:])
		if !ok {
			extent = claimed
			break
		}
		off += n
	}
	tail := data[min(len(data), off+extent):]
	return off, int64(len(data)), off < len(data) && slices.ContainsFunc(tail, func(b byte) bool { return b != 0 }), nil
}

// vlogEntry reads one value-log entry as Badger writes it (meta, user
// meta, uvarint key and value lengths and expiry, key, value, CRC-32C of
// all that) and returns its length; ok false at the end (a zero entry) or a
// bad one, with the length its header claims (0 if unreadable).
func vlogEntry(b []byte) (n, claimed int, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	p := 2
	var lens [3]uint64
	for i := range lens {
		v, k := binary.Uvarint(b[p:])
		if k <= 0 {
			return 0, 0, false
		}
		lens[i], p = v, p+k
	}
	klen, vlen := lens[0], lens[1]
	if klen == 0 && vlen == 0 && b[0] == 0 {
		return 0, 0, false // zeros: the end
	}
	if klen > 1<<16 || vlen > 1<<32 {
		return 0, 0, false
	}
	end := p + int(klen) + int(vlen)
	claimed = end + crc32.Size
	if claimed > len(b) {
		return 0, claimed, false
	}
	if crc32.Checksum(b[:end], castagnoli) != binary.BigEndian.Uint32(b[end:]) {
		return 0, claimed, false
	}
	return claimed, 0, true
}

// replayManifest reads the MANIFEST as Badger does, a panic included.
func replayManifest(f *os.File, o badger.Options) (m badger.Manifest, end int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	return badger.ReplayManifestFile(f, o.ExternalMagicVersion, o)
}

// checkTable opens a table file read-only and verifies every block's
// checksum, as Badger's OnTableRead mode would, but with its panics
// caught and the file named.
func checkTable(path string, o badger.Options, c options.CompressionType) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("unreadable: %v", p)
		}
		// Not Table.DecrRef: its last reference deletes the file.
		_ = mf.Close(-1)
	}()
	if len(mf.Data) == 0 {
		return errors.New("empty")
	}
	_, err = table.OpenTable(mf, table.Options{
		BlockSize:          o.BlockSize,
		BloomFalsePositive: o.BloomFalsePositive,
		ChkMode:            options.OnTableRead,
		Compression:        c,
	})
	return err
}

// tableKeys adds to keys the live keys of a table file (their newest
// version in it; deleted ones and markers left out) of the kinds whose
// loss is reported: references, retained messages, queues.
func tableKeys(path string, o badger.Options, keys map[string]uint64) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("unreadable: %v", p)
		}
		_ = mf.Close(-1)
	}()
	t, err := table.OpenTable(mf, table.Options{BlockSize: o.BlockSize, BloomFalsePositive: o.BloomFalsePositive,
		ChkMode: options.OnTableRead, Compression: o.Compression})
	if err != nil {
		return err
	}
	it := t.NewIterator(0)
	defer it.Close()
	const bitDelete = 1 << 0
	for it.Rewind(); it.Valid(); it.Next() {
		k := y.ParseKey(it.Key())
		if len(k) < 2 || (k[0] != kindRef && k[0] != kindRetained && k[0] != kindQueue) {
			continue
		}
		v := it.Value()
		ts := y.ParseTs(it.Key())
		if old, ok := keys[string(k)]; ok && old >= ts {
			continue
		}
		if v.Meta&bitDelete != 0 || len(v.Value) == 0 {
			delete(keys, string(k))
			continue
		}
		keys[string(k)] = ts
	}
	return nil
}

// countDropped reports, after a repair that let Badger drop table files,
// which of the keys they held are gone: references per queue, retained
// messages, queues.
func (s *Store) countDropped(keys map[string]uint64) {
	if len(keys) == 0 {
		return
	}
	r := &s.repaired
	if r.Messages == nil {
		r.Messages = map[string]int{}
	}
	r.Files = append(r.Files, filepath.Join(s.dir, badgerManifest))
	var queues []string
	for k := range keys {
		key := []byte(k)
		if ok, err := s.has(key); err != nil || ok {
			continue // still there: a newer copy in a listed table
		}
		switch key[0] {
		case kindRef:
			vhost, queue, _, _, _ := parseRefKey(key)
			r.Messages[vhost+"/"+queue]++
		case kindRetained:
			vhost, topic, _, _ := parseEntityKey(key)
			r.Retained++
			r.Topics = append(r.Topics, vhost+"/"+topic)
		case kindQueue:
			vhost, name, _, _ := parseEntityKey(key)
			queues = append(queues, vhost+"/"+name)
		}
	}
	for q, n := range r.Messages {
		s.log.Warn("repair: messages lost with the dropped tables", "queue", q, "messages", n)
	}
	if len(queues) > 0 || r.Retained > 0 {
		slices.Sort(queues)
		s.log.Warn("repair: queues and retained messages lost with the dropped tables",
			"queues", strings.Join(queues, ", "), "retained", r.Retained)
	}
}

// valueLogFile names the value-log file item's value is in, "" for a value
// kept in the LSM tree.
func valueLogFile(dir string, item *badger.Item) string {
	fid, _, _, ok := valuePointer(item)
	if !ok {
		return ""
	}
	return vlogName(dir, fid)
}

func vlogName(dir string, fid uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%06d.vlog", fid))
}

// valuePointer returns where item's value is in the value log (ok false:
// in the LSM tree). Badger does not export it; it is read from the Item's
// fields, valuePointer{Fid, Len, Offset uint32} in native byte order
// (pinned by TestValueLogFileOfItem).
func valuePointer(item *badger.Item) (fid, length, offset uint32, ok bool) {
	v := reflect.ValueOf(item).Elem()
	meta, vptr := v.FieldByName("meta"), v.FieldByName("vptr")
	const bitValuePointer = 1 << 1
	if !meta.IsValid() || !vptr.IsValid() || meta.Kind() != reflect.Uint8 || vptr.Kind() != reflect.Slice ||
		meta.Uint()&bitValuePointer == 0 || vptr.Len() < 12 {
		return 0, 0, 0, false
	}
	b := vptr.Bytes()
	return binary.NativeEndian.Uint32(b), binary.NativeEndian.Uint32(b[4:]), binary.NativeEndian.Uint32(b[8:]), true
}

// vlogSizes returns the size of every value-log file of dir, by id, as
// found before Badger opens it (it may extend the newest one).
func vlogSizes(dir string) map[uint32]int64 {
	sizes := map[uint32]int64{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		var fid uint32
		if _, err := fmt.Sscanf(e.Name(), "%06d.vlog", &fid); err != nil || !strings.HasSuffix(e.Name(), ".vlog") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			sizes[fid] = fi.Size()
		}
	}
	return sizes
}

// checkPointer reports, without reading it, whether item's value can be
// where its pointer says: its value-log file exists and is long enough.
// A deleted or cut-short file is found so; flipped bytes only by reading
// (Options.Repair reads every value).
func (s *Store) checkPointer(item *badger.Item) error {
	fid, length, offset, ok := valuePointer(item)
	if !ok {
		return nil
	}
	size, found := s.vlogSizes[fid]
	switch {
	case !found:
		return fmt.Errorf("%w: %s is missing", ErrDamaged, vlogName(s.dir, fid))
	case int64(offset)+int64(length) > size:
		return fmt.Errorf("%w: %s ends at %d bytes, before the value at %d (%d bytes)", ErrDamaged,
			vlogName(s.dir, fid), size, offset, length)
	}
	return nil
}

// value calls fn with item's value. Badger does not return the error of a
// value it cannot read from the value log (a missing file, a record cut
// short or failing its checksum): it logs it and yields an empty value,
// which for a marker kind would read as "deleted". Values in the value log
// are never empty, so an empty one from there is the damage it is, an
// error naming the file.
func (s *Store) value(item *badger.Item, fn func([]byte) error) error {
	var empty bool
	err := item.Value(func(v []byte) error {
		if len(v) == 0 {
			empty = true
			return nil
		}
		return fn(v)
	})
	if err != nil {
		return err
	}
	if empty {
		if file := valueLogFile(s.dir, item); file != "" {
			return fmt.Errorf("%w: the value of key %q in %s cannot be read (%s)", ErrDamaged,
				item.Key()[:min(len(item.Key()), 64)], file, s.blog.lastReadError())
		}
		return fn(nil)
	}
	return nil
}

// Repair is what Open dropped from a damaged store with Options.Repair.
type Repair struct {
	// Messages is the number of messages lost per queue ("vhost/queue").
	Messages map[string]int
	// Retained is the number of retained messages lost, and Topics their
	// vhosts and topics ("vhost/topic").
	Retained int
	Topics   []string
	// Files names the damaged files.
	Files []string
}

// Lost reports whether anything was dropped.
func (r *Repair) Lost() bool { return len(r.Messages) > 0 || r.Retained > 0 }

// Repair returns what Open dropped with Options.Repair (nothing when the
// store was whole).
func (s *Store) Repair() Repair { return s.repaired }

// damage collects the unreadable records found by load.
type damage struct {
	files   map[string]bool
	bodies  map[uint64]error // unreadable message bodies by id
	perQ    map[*queueState]int
	topics  []string // unreadable retained messages, "vhost/topic"
	tkeys   [][]byte
	firstEr error
}

func (d *damage) add(file string, err error) {
	if d.files == nil {
		d.files = map[string]bool{}
	}
	if file != "" {
		d.files[file] = true
	}
	if d.firstEr == nil {
		d.firstEr = err
	}
}

func (d *damage) fileList() []string {
	var out []string
	for f := range d.files {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

func (d *damage) any() bool { return len(d.perQ) > 0 || len(d.topics) > 0 || len(d.bodies) > 0 }

// summary names the damaged files and what is lost, queue by queue.
func (d *damage) summary(total int) string {
	var b strings.Builder
	if files := d.fileList(); len(files) > 0 {
		fmt.Fprintf(&b, "damaged value-log files: %s; ", strings.Join(files, ", "))
	} else {
		b.WriteString("message bodies missing; ")
	}
	lost := 0
	var qs []string
	for qs_, n := range d.perQ {
		lost += n
		qs = append(qs, fmt.Sprintf("'%s' in vhost '%s': %d", qs_.key.name, qs_.key.vhost, n))
	}
	slices.Sort(qs)
	fmt.Fprintf(&b, "%d of %d stored messages unreadable", lost, total)
	if len(qs) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(qs, ", "))
	}
	if len(d.topics) > 0 {
		fmt.Fprintf(&b, ", %d retained messages unreadable", len(d.topics))
	}
	if d.firstEr != nil {
		fmt.Fprintf(&b, "; first error: %v", d.firstEr)
	}
	return b.String()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
