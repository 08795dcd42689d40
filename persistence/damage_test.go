package persistence

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

// damageStore writes a store of confirmed messages in three queues and
// retained messages, spread over several value-log files and at least one
// table file, and returns its directory and how many messages each queue
// holds.
func damageStore(t *testing.T) (string, map[string]int) {
	t.Helper()
	old := testBadgerOptions
	testBadgerOptions = func(o badger.Options) badger.Options { return o.WithValueLogFileSize(1 << 20) }
	t.Cleanup(func() { testBadgerOptions = old })
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	want := map[string]int{}
	var last uint64
	id := uint64(1)
	for _, q := range []string{"a", "b", "c"} {
		s.PutQueue(core.QueueRecord{VHost: "/", Name: q})
		for i := range 1000 {
			last = s.Enqueue("/", q, uint64(i+1), plainMessage(id, 0, fmt.Sprintf("%s-%d-%s", q, i, strings.Repeat("x", 1000))), 0)
			id++
		}
		want["//"+q] = 1000 // vhost "/", as recoverAll and Repair name queues
	}
	for i := range 50 {
		last, _ = s.PutRetained("/", fmt.Sprintf("r/%d", i), retainedMsg(id, "r", strings.Repeat("r", 500)))
		id++
	}
	if err := s.Wait(last); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s) // flushes the memtable into a table file
	return dir, want
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
	return to
}

// damageKinds damage one file: cut to half, bytes flipped, deleted.
var damageKinds = map[string]func(t *testing.T, path string){
	"truncated": func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	},
	"flipped": func(t *testing.T, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		for range 100 {
			i := 8 + r.IntN(len(b)-8) // past the magic, which says little
			b[i] ^= 0xff
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	},
	"deleted": func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	},
}

// firstFile returns the first file of dir with suffix.
func firstFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			return e.Name()
		}
	}
	t.Fatalf("no %s file in %s", suffix, dir)
	return ""
}

// TestDamagedStore damages each kind of file of a store holding confirmed
// and retained messages, and opens it with and without Options.Repair:
// either Open fails with an error naming the damaged file, or (Repair) it
// opens and reports exactly what it dropped, and everything else is there.
// Never a panic, never a store that opens with less and says nothing.
func TestDamagedStore(t *testing.T) {
	base, want := damageStore(t)
	total := 0
	for _, n := range want {
		total += n
	}
	for _, file := range []string{".sst", ".vlog", badgerManifest} {
		for _, kind := range []string{"truncated", "flipped", "deleted"} {
			for _, repair := range []bool{false, true} {
				name := fmt.Sprintf("%s %s repair=%v", strings.TrimPrefix(file, "."), kind, repair)
				t.Run(name, func(t *testing.T) {
					dir := copyDir(t, base)
					victim := firstFile(t, dir, file)
					damageKinds[kind](t, filepath.Join(dir, victim))
					s, err := Open(dir, Options{NoSync: true, Repair: repair, Logger: testLogger(t)})
					if err != nil {
						t.Logf("refused: %v", err)
						if !strings.Contains(err.Error(), victim) && !(file == badgerManifest && kind == "deleted") {
							t.Errorf("the error does not name %s", victim)
						}
						if file == ".vlog" && repair {
							t.Errorf("a damaged value log with Repair: refused")
						}
						return
					}
					defer closeStore(t, s)
					got := recoverAll(t, s)
					rep := s.Repair()
					t.Logf("opened; repair report: %+v", rep)
					// Flipped bytes in the value log are found when read
					// (Repair reads every value at Open; without it only each
					// value's place is checked): an error naming the file.
					readLater := !repair && file == ".vlog" && kind == "flipped"
					unreadable := 0
					recovered, lost := 0, 0
					for q, n := range want {
						have := len(got.messages[q])
						recovered += have
						lost += rep.Messages[q]
						if have+rep.Messages[q] != n {
							t.Errorf("queue %s: %d recovered + %d reported lost != %d stored", q, have, rep.Messages[q], n)
						}
						// Every message left can be read.
						for _, m := range got.messages[q] {
							_, err := s.Load(m.ID)
							switch {
							case err == nil:
							case readLater && errors.Is(err, ErrDamaged) && strings.Contains(err.Error(), victim):
								unreadable++
							default:
								t.Fatalf("queue %s: message %d recovered but unreadable: %v", q, m.ID, err)
							}
						}
					}
					if readLater && unreadable == 0 {
						t.Error("no message unreadable after 100 bytes flipped in the value log")
					}
					retained := len(retainedAll(t, s))
					if retained+rep.Retained != 50 {
						t.Errorf("%d retained + %d reported lost != 50", retained, rep.Retained)
					}
					if (lost > 0 || rep.Retained > 0) && !repair {
						t.Errorf("lost %d messages and %d retained without Repair", lost, rep.Retained)
					}
					if rep.Lost() && !slices.ContainsFunc(rep.Files, func(f string) bool { return strings.HasSuffix(f, victim) }) {
						t.Errorf("report names %v, not %s", rep.Files, victim)
					}
					t.Logf("%d of %d messages, %d of 50 retained recovered", recovered, total, retained)
				})
			}
		}
	}
}

// TestValueLogFileOfItem pins how valueLogFile reads Badger's value
// pointer: a value in the value log names an existing file, a small one
// none.
func TestValueLogFileOfItem(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	if err := s.Wait(s.Enqueue("/", "q", 1, plainMessage(1, 0, strings.Repeat("b", 4096)), 0)); err != nil {
		t.Fatal(err)
	}
	var files []string
	if err := s.scanItems(nil, s.readTs.Load(), func(item *badger.Item) error {
		files = append(files, string(item.Key()[:1])+"="+valueLogFile(dir, item))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		kind, path, _ := strings.Cut(f, "=")
		switch {
		case kind == "m":
			if _, err := os.Stat(path); path == "" || err != nil {
				t.Errorf("message body: value-log file %q: %v", path, err)
			}
		case path != "":
			t.Errorf("key kind %s in the LSM tree named value-log file %s", kind, path)
		}
	}
	if !errors.Is(fmt.Errorf("x: %w", ErrDamaged), ErrDamaged) {
		t.Fatal("ErrDamaged does not wrap")
	}
}

// TestDamagedMemtableLog: the memtable log of a store killed with writes
// not yet in a table (a copy taken while it runs), with bytes flipped in
// its used part, is refused naming the file; Badger would replay it up to
// the damage and drop the rest without a word.
func TestDamagedMemtableLog(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	var last uint64
	for i := range 500 {
		last = s.Enqueue("/", "q", uint64(i+1), plainMessage(uint64(i+1), 0, strings.Repeat("m", 64)), 0)
	}
	if err := s.Wait(last); err != nil {
		t.Fatal(err)
	}
	killed := copyDir(t, dir) // what a kill -9 now would leave
	closeStore(t, s)

	mem := filepath.Join(killed, firstFile(t, killed, ".mem"))
	if s, err := Open(copyDir(t, killed), Options{NoSync: true, Logger: testLogger(t)}); err != nil {
		t.Fatalf("undamaged copy: %v", err)
	} else {
		closeStore(t, s)
	}
	used, _, damaged, err := checkLogFile(mem)
	if err != nil || damaged || used < 10000 {
		t.Fatalf("memtable log: %d bytes used, damaged %v, %v", used, damaged, err)
	}
	b, _ := os.ReadFile(mem)
	for i := range 10 {
		b[used/3+i*97] ^= 0xff
	}
	os.WriteFile(mem, b, 0o644)
	_, err = Open(killed, Options{NoSync: true, Logger: testLogger(t)})
	if err == nil || !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), filepath.Base(mem)) {
		t.Fatalf("Open with a damaged memtable log: %v", err)
	}
	t.Log(err)
	s, err = Open(killed, Options{NoSync: true, Repair: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open with Repair: %v", err)
	}
	defer closeStore(t, s)
	if n := len(recoverAll(t, s).messages["//q"]); n >= 500 {
		t.Errorf("%d messages after repair of a damaged memtable log", n)
	}
}
