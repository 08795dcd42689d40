package persistence

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

// ErrClosed is returned by Wait, Load, LoadBatch and the Recovery methods
// once the store is closed, and reported to waiters whose positions were
// not committed before Close.
var ErrClosed = errors.New("persistence: store closed")

// ErrNotFound is wrapped by Load and LoadBatch for an id the store does
// not hold.
var ErrNotFound = errors.New("persistence: message not found")

// ErrDiskFull is wrapped by commit errors when the data directory's file
// system has less free space than Options.DiskFreeLimit.
var ErrDiskFull = errors.New("persistence: disk free space below limit")

// ErrTooLarge is wrapped by the error reported for an Enqueue whose
// message, encoded, exceeds MaxMessageSize. It is a core.ErrStoreRefused.
var ErrTooLarge error = &refusal{"persistence: message too large to store"}

// ErrRefused is wrapped by the error reported for an op whose write Badger
// would refuse (a key over 65,000 bytes, a value over a value-log file):
// that op fails alone, and nothing is retried. It is a
// core.ErrStoreRefused.
var ErrRefused error = &refusal{"persistence: write refused by the store"}

// refusal is an error that fails one op alone (core.ErrStoreRefused), as
// opposed to a failed commit, which the writer retries.
type refusal struct{ text string }

func (e *refusal) Error() string { return e.text }

// Is makes errors.Is(err, core.ErrStoreRefused) hold for the refusals, so
// that the protocols, which do not import persistence, can tell them from
// an outage.
func (e *refusal) Is(target error) bool { return target == core.ErrStoreRefused }

// MaxMessageSize (63 MiB) bounds a stored message: body, properties and
// routing information. Badger keeps a value in one value-log file, so the
// limit is the file size less some room; the broker's maximum message size
// must stay below it (RabbitMQ's default of 16 MiB does). A larger message
// is not stored, and its Enqueue's waiters get ErrTooLarge.
const MaxMessageSize = valueLogFileSize - 1<<20

// Defaults of Options.
const (
	DefaultGCInterval = time.Minute
	// DefaultDiskFreeLimit leaves room for what Badger may write before the
	// next check: the rest of a value-log file, a memtable WAL, an L0 table
	// and a compaction. Badger writes through mmap, and a write into a file
	// hole on a full disk is a SIGBUS that kills the process, so the store
	// stops committing well before that.
	DefaultDiskFreeLimit = 2*valueLogFileSize + 4*memTableSize
	// DefaultCommitDelay bounds how long an append no one waits for stays
	// uncommitted. A synced commit costs the writer some 0.1-1 ms here
	// (msync of the value log and the memtable WAL, most of it whatever
	// the batch holds), so 5 ms caps unwaited commits at 200 a second, a
	// small share of a core even when each carries one ack, while a drain
	// acking 40k messages a second puts ~200 acks in each. A crash can
	// lose only what no one was told is durable, acks mostly, which then
	// come back redelivered (RabbitMQ does not fsync acks at all); 5 ms
	// adds little to the window the next commit's own fsync leaves.
	DefaultCommitDelay = 5 * time.Millisecond
)

// Bounds of a held-back batch besides CommitDelay: past either, the writer
// commits at once. lazyMaxOps keeps one commit's work, and what a waiter
// arriving meanwhile waits behind, to a few milliseconds; lazyMaxBytes
// bounds the message bodies that publishes without a confirm keep pinned in
// pending (and in the batch) while held back.
const (
	lazyMaxOps   = 4096
	lazyMaxBytes = 1 << 20
)

// Options configure a Store. The zero value is valid.
type Options struct {
	// Logger receives the store's messages and Badger's own: Badger's
	// info and debug lines at debug level, its warnings at warn, its
	// errors at error. nil means slog.Default().
	Logger *slog.Logger
	// OnError is called from the store's goroutine when a commit fails
	// (a full disk, an I/O error), so that the broker can block
	// publishers; it is called again with nil once a later commit
	// succeeds. It must not block and must not call into the Store.
	OnError func(err error)
	// GCInterval is the period of value-log garbage collection, which
	// reclaims the disk space of acknowledged messages; 0 means
	// DefaultGCInterval, negative disables it.
	GCInterval time.Duration
	// DiskFreeLimit is the free space, in bytes, below which commits fail
	// with ErrDiskFull instead of writing; 0 means DefaultDiskFreeLimit,
	// and so does a smaller positive value (logged at WARN): less would
	// let a full disk end the process with a SIGBUS. Negative disables the
	// check.
	DiskFreeLimit int64
	// Repair opens a damaged store instead of refusing it: messages and
	// retained messages whose value-log records cannot be read are
	// dropped, and reported (Store.Repair, and at WARN per queue). Damaged
	// table files and a MANIFEST that cannot be read are refused all the
	// same; a MANIFEST that lost records is accepted, and Badger deletes
	// the table files it no longer lists.
	Repair bool
	// NoSync skips fsync: a commit is reported synced once Badger has it
	// in memory. For tests only; a crash loses confirmed messages.
	NoSync bool
	// CommitDelay is how long the writer may hold back a commit that no
	// one waits for (acks' Removes, publishes without a confirm) to gather
	// more into it; see "Group commit" in the package doc. 0 means
	// DefaultCommitDelay; negative commits at once, as a waited-for
	// commit is.
	CommitDelay time.Duration
}

// Store is the Badger-backed core.Store and core.Recovery. Appends go to an
// in-memory log and return at once; one goroutine commits the log in
// batches, each made durable by one fsync (group commit), and then tells
// the waiters. It is safe for concurrent use.
type Store struct {
	dir     string
	db      *badger.DB
	log     *slog.Logger
	blog    *badgerLogger
	onError func(error)
	// diskFreeLimit is Options.DiskFreeLimit resolved; <= 0 disables.
	diskFreeLimit int64
	// valueLimit is Badger's largest value, its value-log file size.
	valueLimit int64
	repair     bool // Options.Repair
	// vlogSizes are the value-log files' sizes before Badger opened them.
	vlogSizes map[uint32]int64
	repaired  Repair // what Open dropped

	// mu guards the log and the waiters; it is held only to append or to
	// swap slices, never across I/O, because core appends with its queue
	// locks held.
	mu      sync.Mutex
	pos     uint64                // last position handed out
	taken   uint64                // last position the writer has taken
	ops     []op                  // appended, not yet taken by the writer
	spare   []op                  // the writer's previous batch, cleared, reused as ops
	pending map[uint64]pendingMsg // messages appended and not yet committed, for Load
	waiters []waiter
	// holds are the first positions of the open Holds: the writer takes
	// the log only up to the position before the oldest of them.
	holds  []uint64
	synced uint64 // every position up to it is committed
	// failures are the latest committed positions whose ops the store
	// failed alone (refused), in position order, so that a waiter
	// registering after the commit still learns of it. Bounded: only the
	// most recent maxFailures or so are kept.
	failures []failure
	// lastFailed is the last position in failures (0: none), so that
	// FailedBetween and tell need not take mu for positions after it: on a
	// store that never failed an op, or past its last refusal.
	lastFailed atomic.Uint64
	closing    bool  // Close has begun: the writer's next batch is its last
	sealed     bool  // the writer has taken its last batch: later appends are lost
	unclean    bool  // something appended after sealed was lost: keep the crash mark
	closed     bool  // the writer has stopped: appends are dropped
	closeErr   error // set with closed: what the last waiters were told

	// want is the largest position a waiter (Notify, Wait) registered
	// for: while it is past taken, someone waits for what the writer has
	// not taken, and the writer commits at once instead of holding back.
	want uint64
	// opsBytes is the size of the bodies Enqueued in ops, for
	// lazyMaxBytes.
	opsBytes int
	// lazy is set while the writer holds back a batch no one waits for:
	// a waiter for a position it has not taken must wake it.
	lazy bool
	// commitDelay is Options.CommitDelay resolved; 0 commits at once.
	commitDelay time.Duration

	kick chan struct{} // wakes the writer; capacity 1, sent without blocking

	// readTs is the Badger version of the last successful commit: Load and
	// the Recovery methods read at it, so they never wait for a commit in
	// flight (an unmanaged Badger read transaction waits for every
	// commit that has a timestamp, fsync included).
	readTs atomic.Uint64
	maxID  atomic.Uint64 // largest message id stored

	// dbMu keeps the Badger handle alive under readers: Load and the
	// Recovery methods hold it shared, Close exclusively to close Badger.
	dbMu     sync.RWMutex
	dbClosed bool // guarded by dbMu

	w writer // owned by the writer goroutine (and by Open before it starts)

	commits atomic.Uint64 // commit attempts, for tests of group commit
	stats   storeStats    // figures for Stats

	// sweepReq asks the writer for an orphan sweep (see sweepChunk); set
	// by the GC goroutine after GC moved something.
	sweepReq atomic.Bool
	sweeps   atomic.Uint64 // sweeps finished, for tests

	// testCommitHook, set by internal tests, runs before each commit; an
	// error it returns fails that commit.
	testCommitHook atomic.Pointer[func() error]
	// testAppendHook, set by internal tests, sees each append before it
	// takes its position: a failpoint can stop the store there.
	testAppendHook atomic.Pointer[func(o *op)]
	// testLazyHook, set by internal tests, runs each time the writer
	// holds a batch back, before it sleeps.
	testLazyHook atomic.Pointer[func()]

	quit   chan struct{}
	done   chan struct{}
	gcStop chan struct{}
	gcDone chan struct{}
}

var (
	_ core.Store      = (*Store)(nil)
	_ core.Recovery   = (*Store)(nil)
	_ core.FailureLog = (*Store)(nil)
)

// pendingMsg is a message appended but not yet committed; pos is the
// position of its last Enqueue.
type pendingMsg struct {
	msg *core.Message
	pos uint64
}

type waiter struct {
	pos uint64
	w   core.SyncWaiter
}

// Open opens the store in dir, creating the directory and an empty store if
// dir does not exist or is empty. A directory that exists but does not hold
// a store this package can read (a file, an unreadable or corrupt
// directory, a non-empty directory without a store, a store locked by
// another process or another Store) is an error naming dir and the cause:
// the broker must never start empty over data it could not read.
func Open(dir string, opts Options) (*Store, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	blog := &badgerLogger{l: logger.With("component", "badger")}
	bopts := badgerOptions(dir, opts.NoSync, blog)
	if testBadgerOptions != nil {
		bopts = testBadgerOptions(bopts)
	}
	sizes := vlogSizes(dir)
	dropped, err := checkFiles(dir, bopts, opts.Repair, logger.With("component", "persistence", "dir", dir).Warn)
	if err != nil {
		return nil, fmt.Errorf("persistence: open %s: %w", dir, err)
	}
	db, err := openBadger(bopts)
	if err != nil {
		return nil, fmt.Errorf("persistence: open %s: %w", dir, err)
	}
	s := &Store{
		dir:        dir,
		db:         db,
		log:        logger.With("component", "persistence", "dir", dir),
		blog:       blog,
		onError:    opts.OnError,
		valueLimit: bopts.ValueLogFileSize,
		repair:     opts.Repair,
		vlogSizes:  sizes,
		pending:    make(map[uint64]pendingMsg),
		kick:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
		gcStop:     make(chan struct{}),
		gcDone:     make(chan struct{}),
	}
	switch {
	case opts.CommitDelay == 0:
		s.commitDelay = DefaultCommitDelay
	case opts.CommitDelay > 0:
		s.commitDelay = opts.CommitDelay
	}
	switch {
	case opts.DiskFreeLimit == 0:
		s.diskFreeLimit = DefaultDiskFreeLimit
	case opts.DiskFreeLimit > 0:
		s.diskFreeLimit = max(opts.DiskFreeLimit, DefaultDiskFreeLimit)
		if opts.DiskFreeLimit < DefaultDiskFreeLimit {
			s.log.Warn("disk free limit raised to the least that keeps a full disk from ending the process (Badger writes through mmap: a SIGBUS)",
				"asked", opts.DiskFreeLimit, "limit", DefaultDiskFreeLimit)
		}
	}
	s.w.init()
	s.stats.init()
	s.w.lastTs = db.MaxVersion()
	s.countDropped(dropped)
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("persistence: open %s: %w", dir, err)
	}
	go s.run()
	gcInterval := opts.GCInterval
	if gcInterval == 0 {
		gcInterval = DefaultGCInterval
	}
	go s.gcLoop(gcInterval)
	return s, nil
}

// checkDir refuses a path that is not a directory, and a non-empty
// directory holding no Badger store: Badger would create a fresh store
// there (and delete table files its new manifest does not list), which is
// how a mistyped --data-dir or a lost MANIFEST turns into a silently empty
// broker.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("persistence: create %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("persistence: open %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("persistence: open %s: not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("persistence: open %s: %w", dir, err)
	}
	var stranger string
	for _, e := range entries {
		switch e.Name() {
		case badgerManifest:
			return nil
		case "LOCK", "lost+found":
			// LOCK alone is what a crash during the very first open leaves;
			// lost+found is there when dir is a mount point.
		default:
			if stranger == "" {
				stranger = e.Name()
			}
		}
	}
	if stranger != "" {
		return fmt.Errorf("persistence: open %s: directory is not empty (%s) but holds no store (no %s): refusing to start an empty store over it",
			dir, filepath.Join(dir, stranger), badgerManifest)
	}
	return nil
}

const badgerManifest = "MANIFEST"

// testBadgerOptions, set by internal tests, adjusts the Badger options
// (smaller files, so that value-log GC can be seen on little data).
var testBadgerOptions func(badger.Options) badger.Options

// openBadger opens Badger, turning a panic (some damaged files make
// Badger's open path panic instead of returning an error) into an error.
func openBadger(o badger.Options) (db *badger.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("badger: %v", p)
		}
	}()
	// Managed mode: the writer picks commit timestamps and readers read at
	// the last committed one, so reads never wait for a commit in flight.
	return badger.OpenManaged(o)
}

// Close commits what has been appended, tells every waiter, stops the
// store's goroutines and closes Badger. Appends after Close are dropped;
// Wait and Notify for positions not committed report ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closing = true
	s.mu.Unlock()

	close(s.gcStop)
	<-s.gcDone
	close(s.quit)
	<-s.done

	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	s.mu.Lock()
	unclean := s.unclean
	s.mu.Unlock()
	if unclean && s.w.cleanClose {
		// An append came after the last batch and is lost: the crash
		// mark the last batch deleted goes back. Appends after Close has
		// returned are a caller's bug.
		s.w.ov.set(runningKey, nil, false)
		if err := s.commit(); err != nil {
			s.log.Error("restore the crash mark after appends lost at close", "err", err)
		}
	}
	s.dbClosed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("persistence: close %s: %w", s.dir, err)
	}
	return nil
}

// Appends. Each takes mu for a slice append: they never block on I/O and
// never call back into core, because core calls them with queue locks held.

// PutExchange implements core.Store.
func (s *Store) PutExchange(vhost string, d core.ExchangeDecl) uint64 {
	return s.append(op{kind: opPutExchange, vhost: vhost, name: d.Name, rec: &d})
}

// DeleteExchange implements core.Store. The exchange's bindings, as source
// or as destination, are deleted with it.
func (s *Store) DeleteExchange(vhost, name string) uint64 {
	return s.append(op{kind: opDeleteExchange, vhost: vhost, name: name})
}

// PutQueue implements core.Store.
func (s *Store) PutQueue(r core.QueueRecord) uint64 {
	return s.append(op{kind: opPutQueue, vhost: r.VHost, name: r.Name, rec: &r})
}

// TouchQueue implements core.Store. A queue the store does not hold is
// ignored.
func (s *Store) TouchQueue(vhost, name string, lastUsed int64) uint64 {
	return s.append(op{kind: opTouchQueue, vhost: vhost, name: name, deadline: lastUsed})
}

// DeleteQueue implements core.Store: the queue's record, message
// references, delivered mark and the bindings to it go, and so do the
// bodies no other queue references.
func (s *Store) DeleteQueue(vhost, name string) uint64 {
	return s.append(op{kind: opDeleteQueue, vhost: vhost, name: name})
}

// PutBinding implements core.Store.
func (s *Store) PutBinding(vhost string, b core.BindingRecord) uint64 {
	return s.append(op{kind: opPutBinding, vhost: vhost, name: b.Source, rec: &b})
}

// DeleteBinding implements core.Store.
func (s *Store) DeleteBinding(vhost string, b core.BindingRecord) uint64 {
	return s.append(op{kind: opDeleteBinding, vhost: vhost, name: b.Source, rec: &b})
}

// Enqueue implements core.Store. The message is written once however many
// queues reference it; until that write commits, Load returns msg itself.
// An Enqueue for a queue the store does not hold (never put, or deleted)
// is ignored and logged. seq must not be one the queue holds already.
func (s *Store) Enqueue(vhost, queue string, seq uint64, msg *core.Message, deadline int64) uint64 {
	return s.append(op{kind: opEnqueue, vhost: vhost, name: queue, seq: seq, id: msg.ID, msg: msg, deadline: deadline})
}

// Remove implements core.Store. Core must remove each reference it
// enqueued at most once: the store counts references per message in
// memory rather than reading them back, and deletes a body when its count
// reaches zero. A Remove for a queue the store does not hold is ignored.
// An Enqueue and its Remove committed in the same batch write nothing.
func (s *Store) Remove(vhost, queue string, seq, msgID uint64) uint64 {
	return s.append(op{kind: opRemove, vhost: vhost, name: queue, seq: seq, id: msgID})
}

// Delivered implements core.Store. It takes no position of its own and
// does not start a commit: the mark rides along with the next one.
func (s *Store) Delivered(vhost, queue string, seq uint64) {
	s.mu.Lock()
	if s.sealed {
		s.unclean = true
	} else {
		s.ops = append(s.ops, op{kind: opDelivered, pos: s.pos, vhost: vhost, name: queue, seq: seq})
	}
	s.mu.Unlock()
}

// Hold implements core.Store. The token is the first position the hold
// covers.
func (s *Store) Hold() uint64 {
	s.mu.Lock()
	from := s.pos + 1
	s.holds = append(s.holds, from)
	s.mu.Unlock()
	return from
}

// Release implements core.Store, and wakes the writer for what the hold
// kept back.
func (s *Store) Release(token uint64) {
	s.mu.Lock()
	if i := slices.Index(s.holds, token); i >= 0 {
		s.holds = slices.Delete(s.holds, i, i+1)
	}
	s.mu.Unlock()
	s.signal()
}

// cutLocked is the last position the writer may take: the last appended,
// or the one before the oldest open hold. s.mu is held.
func (s *Store) cutLocked() uint64 {
	cut := s.pos
	for _, from := range s.holds {
		cut = min(cut, from-1)
	}
	return cut
}

// takeLocked removes from the log and returns the ops up to cut; the
// Delivered marks among them carry the position of the append before them.
// s.mu is held.
func (s *Store) takeLocked(cut uint64) []op {
	ops := s.ops
	k := len(ops)
	if cut < s.pos {
		k, _ = slices.BinarySearchFunc(ops, cut+1, func(o op, pos uint64) int { return cmp.Compare(o.pos, pos) })
	}
	s.ops = append(s.spare[:0], ops[k:]...)
	s.spare = nil
	s.taken = cut
	s.opsBytes = 0
	for i := range s.ops { // left behind a Hold: rare, and few
		if s.ops[i].kind == opEnqueue {
			s.opsBytes += len(s.ops[i].msg.Body)
		}
	}
	return ops[:k]
}

func (s *Store) append(o op) uint64 {
	if hook := s.testAppendHook.Load(); hook != nil {
		(*hook)(&o)
	}
	s.mu.Lock()
	s.pos++
	o.pos = s.pos
	if s.sealed {
		s.unclean = true
		s.mu.Unlock()
		return o.pos
	}
	// Wake the writer only for the first append since it last took the
	// log, since it looks at the log again after every commit anyway, and
	// when the log reaches a bound of a held-back batch (see cycle).
	wake := o.pos == s.taken+1
	s.ops = append(s.ops, o)
	if len(s.ops) == lazyMaxOps {
		wake = true
	}
	if o.kind == opEnqueue {
		s.pending[o.id] = pendingMsg{msg: o.msg, pos: o.pos}
		n := len(o.msg.Body)
		if s.opsBytes < lazyMaxBytes && s.opsBytes+n >= lazyMaxBytes {
			wake = true
		}
		s.opsBytes += n
	}
	s.mu.Unlock()
	if wake {
		s.signal()
	}
	return o.pos
}

func (s *Store) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Notify implements core.Store: w.Synced runs on the store's goroutine,
// even when pos is already committed, so that it never runs under the
// caller's locks.
func (s *Store) Notify(pos uint64, w core.SyncWaiter) {
	s.mu.Lock()
	if s.closed {
		err := s.closeErr
		if pos <= s.synced {
			err = nil
		}
		s.mu.Unlock()
		go w.Synced(pos, err)
		return
	}
	s.waiters = append(s.waiters, waiter{pos: pos, w: w})
	s.want = max(s.want, pos)
	// A position committed already is told by the writer; one it holds
	// back must be committed now.
	wake := pos <= s.synced || s.lazy && pos > s.taken
	s.mu.Unlock()
	if wake {
		s.signal()
	}
}

// failure is a range of positions, from to to, whose ops the store failed
// with err (the writer's are one position each).
type failure struct {
	from, to uint64
	err      error
}

// maxFailures bounds the failure log. A SyncQueue asks it about positions
// of the last commit or two, so only a burst of thousands of refusals
// within a commit could push out an entry still asked about; then the
// queue fails every item it releases with the error its own position got
// (see core.SyncQueue), never confirms a refused one.
const maxFailures = 4096

// logFailuresLocked appends a committed batch's failures (sorted) to the
// failure log. s.mu is held.
func (s *Store) logFailuresLocked(fails []failure) {
	for _, f := range fails {
		if n := len(s.failures); n > 0 && f.from <= s.failures[n-1].to {
			continue // the same position twice (refused at apply and at commit)
		}
		if len(s.failures) >= maxFailures {
			// Drop the older half at once, so that a long run of refusals
			// costs one copy per maxFailures/2 of them.
			n := copy(s.failures, s.failures[len(s.failures)/2:])
			clear(s.failures[n:])
			s.failures = s.failures[:n]
		}
		s.failures = append(s.failures, f)
	}
	if n := len(s.failures); n > 0 {
		s.lastFailed.Store(s.failures[n-1].to)
	}
}

// failedLocked returns the error the store failed the op at committed
// position pos with, if any; s.mu is held.
func (s *Store) failedLocked(pos uint64) error {
	if f, ok := findFailure(s.failures, pos); ok {
		return f.err
	}
	return nil
}

// FailedBetween implements core.FailureLog: the positions in [from, to]
// whose ops the store failed, with their errors. It takes s.mu only when
// the store has failed an op at or after from.
func (s *Store) FailedBetween(from, to uint64) []core.StoreFailure {
	if s.lastFailed.Load() < from {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.failures, from, func(f failure, p uint64) int { return cmp.Compare(f.to, p) })
	var out []core.StoreFailure
	for ; i < len(s.failures) && s.failures[i].from <= to; i++ {
		f := s.failures[i]
		out = append(out, core.StoreFailure{From: f.from, To: f.to, Err: f.err})
	}
	return out
}

// chanWaiter is the SyncWaiter of Wait.
type chanWaiter chan error

func (c chanWaiter) Synced(_ uint64, err error) { c <- err }

// Wait implements core.Store.
func (s *Store) Wait(pos uint64) error {
	s.mu.Lock()
	if pos <= s.synced {
		err := s.failedLocked(pos)
		s.mu.Unlock()
		return err
	}
	if s.closed {
		err := s.closeErr
		s.mu.Unlock()
		return err
	}
	c := make(chanWaiter, 1)
	s.waiters = append(s.waiters, waiter{pos: pos, w: c})
	s.want = max(s.want, pos)
	wake := s.lazy && pos > s.taken
	s.mu.Unlock()
	if wake {
		s.signal()
	}
	return <-c
}

// Load reads one message back by id, as LoadBatch does for many. A message
// whose write has not committed yet comes from memory; otherwise it is one
// point read from Badger at the last committed version, which never waits
// for the writer.
func (s *Store) Load(id uint64) (*core.Message, error) {
	s.mu.Lock()
	p, ok := s.pending[id]
	s.mu.Unlock()
	if ok {
		return p.msg, nil
	}
	// The writer publishes readTs before it drops committed messages from
	// pending, so a message missing from pending is visible at readTs.
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return nil, ErrClosed
	}
	txn := s.db.NewTransactionAt(s.readTs.Load(), false)
	defer txn.Discard()
	var kb [10]byte
	item, err := txn.Get(messageKey(kb[:0], id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: load message %d: %w", id, err)
	}
	var m *core.Message
	err = s.value(item, func(v []byte) error {
		var err error
		m, err = decodeMessage(id, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("persistence: load message %d: %w", id, err)
	}
	return m, nil
}

// messagePrefix is the prefix of every message body's key.
var messagePrefix = kindPrefix(kindMessage)

// LoadBatch implements core.Store: Load for many ids at once, for a
// window of a queue's paged-out messages. Messages whose write has not
// committed yet come from memory, all looked up under one lock; the rest
// are read in one read transaction at the last committed version with one
// iterator, walked in id order: Next when the wanted id follows the one the
// iterator is on (a queue's messages mostly have consecutive ids), Seek
// otherwise. Each value is checked and decoded as Load does, so a message
// gets the same message or error from both.
func (s *Store) LoadBatch(ids []uint64, msgs []*core.Message, errs []error) {
	var restBuf [256]int
	rest := restBuf[:0] // indexes of the ids to read from Badger
	s.mu.Lock()
	for i, id := range ids {
		if p, ok := s.pending[id]; ok {
			msgs[i], errs[i] = p.msg, nil
			continue
		}
		msgs[i], errs[i] = nil, nil
		rest = append(rest, i)
	}
	s.mu.Unlock()
	if len(rest) == 0 {
		return
	}
	// The writer publishes readTs before it drops committed messages from
	// pending, so every message missing from pending above is visible at
	// the readTs loaded below (as in Load).
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		for _, i := range rest {
			errs[i] = ErrClosed
		}
		return
	}
	byID := func(a, b int) int { return cmp.Compare(ids[a], ids[b]) }
	if !slices.IsSortedFunc(rest, byID) {
		slices.SortFunc(rest, byID)
	}
	txn := s.db.NewTransactionAt(s.readTs.Load(), false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: messagePrefix})
	defer it.Close()
	var kb [10]byte
	var on uint64 // the id whose key the iterator is on, if onKey
	onKey := false
	for _, i := range rest {
		id := ids[i]
		key := messageKey(kb[:0], id)
		switch {
		case onKey && id == on: // the same id twice: the same item
		case onKey && id == on+1:
			it.Next()
		default:
			it.Seek(key)
		}
		onKey = false
		if !it.Valid() || !bytes.Equal(it.Item().Key(), key) {
			errs[i] = fmt.Errorf("%w: id %d", ErrNotFound, id)
			continue
		}
		onKey, on = true, id
		err := s.value(it.Item(), func(v []byte) error {
			m, err := decodeMessage(id, v)
			msgs[i] = m
			return err
		})
		if err != nil {
			msgs[i], errs[i] = nil, fmt.Errorf("persistence: load message %d: %w", id, err)
		}
	}
}
