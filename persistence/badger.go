package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Badger tuning. The broker must hold a million persistent 1 KiB messages
// in well under 1 GiB of RSS, so every buffer Badger sizes by default for a
// database server is cut down to what a message store uses: bodies are
// written once to the value log and read back once; the LSM tree holds only
// small keys, references and value pointers.
const (
	// memTableSize: each memtable is a skiplist arena of about 1.3× this
	// (Badger adds room for one maximal batch), allocated on the Go heap.
	// 16 MiB (default 64) still takes a batch of some 25,000 entries in
	// one transaction: a group commit of 10,000 messages is one fsync.
	memTableSize = 16 << 20
	// numMemtables: the mutable memtable plus one being flushed is enough
	// for a workload whose LSM entries are small; the default 5 would pin
	// up to 5 arenas (over 400 MiB at default sizes).
	numMemtables = 2
	// numLevelZeroTables: compact L0 early. Each L0 table is a memtable's
	// worth, every Load probes each one's bloom filter, and the tables are
	// small (keys and pointers), so early compaction is cheap. The stall
	// point stays well above it so that bursts do not block writes.
	numLevelZeroTables      = 3
	numLevelZeroTablesStall = 12
	// blockCacheSize 0 with no compression: table blocks are read in place
	// from the mmapped files (the kernel's page cache is the cache, and it
	// is reclaimable), instead of a 256 MiB Go-heap cache by default.
	// Compression would need the cache, and buys little on keys that block
	// prefix encoding already shortens.
	blockCacheSize = 0
	// indexCacheSize bounds the table indexes and bloom filters held in
	// memory (0 would keep all of them, growing with the store). 16 MiB
	// holds them all for a few million messages.
	indexCacheSize = 16 << 20
	// valueThreshold: values of this size or more go to the value log.
	// References (about 15 bytes), delivered marks and most topology
	// records stay in the LSM tree, so recovery iterates them without
	// touching the value log; any message with a body of some size goes to
	// the value log, written once instead of being rewritten by every
	// compaction (Badger's default of 1 MiB would put them all in the LSM).
	// It must stay above the largest reference (30 bytes): references are
	// deleted with tombstones, which is safe only for values that value-log
	// GC never moves (see markerKind).
	valueThreshold = 128
	// valueLogFileSize: the value log is garbage collected a file at a
	// time, so smaller files give disk space back sooner after acks
	// (default 1 GiB). A value must fit in one file: see MaxMessageSize.
	valueLogFileSize = 64 << 20
	// numCompactors: the minimum Badger accepts; compactions of a small
	// LSM tree are short, and each one holds its own buffers.
	numCompactors = 2
)

// badgerOptions are the Badger options of a store in dir.
func badgerOptions(dir string, noSync bool, logger *badgerLogger) badger.Options {
	return badger.DefaultOptions(dir).
		// Durability: with SyncWrites, every write request Badger makes
		// (one per transaction of our batch, and value-log GC rewrites)
		// msyncs the value log and the memtable WAL before it completes,
		// so WriteBatch.Flush returns only once the batch is on disk. The
		// alternative, DB.Sync after an unsynced batch, syncs only the
		// current memtable's WAL and leaves GC rewrites unsynced while GC
		// deletes the value-log file they were copied from.
		WithSyncWrites(!noSync).
		WithLogger(logger).
		// Every value read from the value log has its checksum verified, so
		// damage is an error (see check.go), never a wrong message.
		WithVerifyValueChecksum(true).
		WithMetricsEnabled(false).
		// Conflict detection tracks the keys read by update transactions;
		// ours are blind write batches.
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(numLevelZeroTables).
		WithNumLevelZeroTablesStall(numLevelZeroTablesStall).
		WithCompression(options.None).
		WithBlockCacheSize(blockCacheSize).
		WithIndexCacheSize(indexCacheSize).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(numCompactors)
}

// badgerLogger sends Badger's log lines to slog. Badger is chatty at info
// level (every flush and compaction), so info and debug go to debug.
type badgerLogger struct {
	l *slog.Logger
	// errors counts error lines: a commit during which one appears is
	// treated as failed (see Store.commit).
	errors atomic.Uint64
	last   atomic.Pointer[string]
	// lastRead is the cause of the last value-log read that failed.
	lastRead atomic.Pointer[string]
}

func (b *badgerLogger) Errorf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	if strings.HasPrefix(msg, "Unable to read: ") || (strings.HasPrefix(msg, "Key: ") && strings.Contains(msg, "valuePointer:")) {
		// A value-log read that failed (Item.Value then yields an empty
		// value, see Store.value): reported by the store, naming the file,
		// and no write error, which must not fail a commit in flight.
		if _, why, ok := strings.Cut(msg, " Error: "); ok {
			b.lastRead.Store(&why)
		}
		b.l.Debug(msg)
		return
	}
	b.last.Store(&msg)
	b.errors.Add(1)
	b.l.Error(msg)
}

func (b *badgerLogger) Warningf(format string, args ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (b *badgerLogger) Infof(format string, args ...any) { b.debug(format, args) }

func (b *badgerLogger) Debugf(format string, args ...any) { b.debug(format, args) }

func (b *badgerLogger) debug(format string, args []any) {
	// Badger logs at debug on every write request: format only if wanted.
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
}

func (b *badgerLogger) lastReadError() string {
	if p := b.lastRead.Load(); p != nil {
		return *p
	}
	return "unreadable"
}

func (b *badgerLogger) lastError() string {
	if p := b.last.Load(); p != nil {
		return *p
	}
	return "unknown error"
}

// gcLoop runs value-log GC every interval until Close. Deleting a message
// only writes a tombstone; the body's bytes stay in its value-log file
// until GC rewrites the file's live values elsewhere and deletes it.
func (s *Store) gcLoop(interval time.Duration) {
	defer close(s.gcDone)
	if interval < 0 {
		<-s.gcStop
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
			s.collect()
		}
	}
}

// collect runs value-log GC and, if it moved anything, asks the writer to
// sweep the bodies it may have brought back. It returns how many files GC
// rewrote.
func (s *Store) collect() int {
	n := s.runGC()
	if n > 0 {
		s.sweepReq.Store(true)
		s.signal()
	}
	return n
}

// runGC rewrites value-log files while Badger finds one at least half
// garbage, and returns how many it rewrote.
func (s *Store) runGC() int {
	s.stats.gcRuns.Add(1)
	n := 0
	for {
		select {
		case <-s.gcStop:
			return n
		default:
		}
		err := s.db.RunValueLogGC(0.5)
		switch {
		case err == nil:
			n++
			s.stats.gcFilesRewritten.Add(1)
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		default:
			s.log.Warn("value log GC", "err", err)
		}
		if n > 0 {
			s.log.Debug("value log GC", "files_rewritten", n)
		}
		return n
	}
}
