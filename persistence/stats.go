package persistence

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Bucket upper bounds of the store's histograms (StoreStats). Each bucket
// counts the observations at or below its bound and above the previous
// one; the last, implicit bucket (+Inf) is Count minus their sum.
var (
	// BatchSizeBuckets are in ops per commit: powers of two, as a lone
	// publisher commits one op at a time and a busy node thousands.
	BatchSizeBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192}
	// CommitSecondsBuckets are in seconds: from a page-cache write (no
	// sync) to a disk that stalls.
	CommitSecondsBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
)

// Histogram is a snapshot of one of the store's histograms, in the shape
// of a Prometheus histogram: Buckets[i] counts the observations at most
// Bounds[i] (not cumulative), Count and Sum cover them all.
type Histogram struct {
	Bounds  []float64
	Buckets []uint64
	Count   uint64
	Sum     float64
}

// StoreStats are the store's figures since Open.
type StoreStats struct {
	// Commits counts the batches written, each ending with one fsync
	// (without Options.NoSync); CommitErrors those that failed.
	Commits, CommitErrors uint64
	// BatchOps is the distribution of ops per commit; CommitSeconds that
	// of a commit's write and fsync time.
	BatchOps, CommitSeconds Histogram
	// GCRuns counts value-log GC passes, GCFilesRewritten the value-log
	// files they rewrote.
	GCRuns, GCFilesRewritten uint64
	// LSMBytes and VLogBytes are the disk space taken by Badger's LSM
	// tree (.sst files) and value log (.vlog files), measured by Stats.
	LSMBytes, VLogBytes int64
}

// histogram counts observations without locks: one goroutine observes (the
// writer, or the GC loop), any may snapshot. A snapshot taken during an
// observation may see the bucket and not yet the count; Prometheus
// tolerates such a scrape, and the next one is exact.
type histogram struct {
	bounds  []float64
	buckets []atomic.Uint64 // len(bounds)+1: the last is +Inf
	count   atomic.Uint64
	sumBits atomic.Uint64 // sum in units of 1e-9 (ns or nano-ops)
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, buckets: make([]atomic.Uint64, len(bounds)+1)}
}

// observe records v; nano is v in units of 1e-9, kept as an integer so
// that the sum needs no floating-point compare-and-swap.
func (h *histogram) observe(v float64, nano uint64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumBits.Add(nano)
	h.count.Add(1)
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: h.bounds, Buckets: make([]uint64, len(h.bounds))}
	for i := range h.bounds {
		out.Buckets[i] = h.buckets[i].Load()
	}
	out.Count = h.count.Load()
	out.Sum = float64(h.sumBits.Load()) / 1e9
	return out
}

// storeStats are the Store's counters.
type storeStats struct {
	commits, commitErrors    atomic.Uint64
	batchOps, commitSeconds  *histogram
	gcRuns, gcFilesRewritten atomic.Uint64
}

func (st *storeStats) init() {
	st.batchOps = newHistogram(BatchSizeBuckets)
	st.commitSeconds = newHistogram(CommitSecondsBuckets)
}

// observeCommit records one commit of ops ops that took d and failed if
// err is not nil.
func (st *storeStats) observeCommit(ops int, d time.Duration, err error) {
	if err != nil {
		st.commitErrors.Add(1)
		return
	}
	st.commits.Add(1)
	st.batchOps.observe(float64(ops), uint64(ops)*1e9)
	st.commitSeconds.observe(d.Seconds(), uint64(d))
}

// Stats returns the store's figures. It takes no lock the writer holds;
// it lists the data directory for the file sizes (Badger's own figures
// are off with its expvar metrics).
func (s *Store) Stats() StoreStats {
	lsm, vlog := dirSizes(s.dir)
	return StoreStats{
		Commits:          s.stats.commits.Load(),
		CommitErrors:     s.stats.commitErrors.Load(),
		BatchOps:         s.stats.batchOps.snapshot(),
		CommitSeconds:    s.stats.commitSeconds.snapshot(),
		GCRuns:           s.stats.gcRuns.Load(),
		GCFilesRewritten: s.stats.gcFilesRewritten.Load(),
		LSMBytes:         lsm,
		VLogBytes:        vlog,
	}
}

// dirSizes adds up the sizes of Badger's table and value-log files in dir.
// Files that vanish while it looks (compaction, GC) are skipped.
func dirSizes(dir string) (lsm, vlog int64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		if ext != ".sst" && ext != ".vlog" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if ext == ".sst" {
			lsm += diskBytes(fi)
		} else {
			vlog += diskBytes(fi)
		}
	}
	return lsm, vlog
}
