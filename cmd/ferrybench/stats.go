package main

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sort"
)

// Every message body starts with a header that lets the receiver check the
// delivery and measure latency without allocating:
//
//	[0:4]  sequence number within its publisher, little endian
//	[4:6]  publisher id
//	[6:10] send time in µs since the run's start (wraps after 71 minutes)
//
// The rest of the body is filler up to --size.
const headerSize = 10

// putHeader writes the header into b, which must be at least headerSize long.
func putHeader(b []byte, seq uint32, pub uint16, sentUs uint32) {
	binary.LittleEndian.PutUint32(b[0:4], seq)
	binary.LittleEndian.PutUint16(b[4:6], pub)
	binary.LittleEndian.PutUint32(b[6:10], sentUs)
}

// readHeader is the inverse of putHeader. ok is false for a body too short to
// carry a header.
func readHeader(b []byte) (seq uint32, pub uint16, sentUs uint32, ok bool) {
	if len(b) < headerSize {
		return 0, 0, 0, false
	}
	return binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint32(b[6:10]), true
}

// seqSet is a growable bitset of sequence numbers. Not safe for concurrent
// use: each receiving stream owns its own sets.
type seqSet struct {
	words []uint64
	n     int64 // bits set
}

// add sets seq and reports whether it was already set (a duplicate).
func (s *seqSet) add(seq uint32) (dup bool) {
	w := int(seq >> 6)
	if w >= len(s.words) {
		size := max(2*len(s.words), w+1, 1024)
		grown := make([]uint64, size)
		copy(grown, s.words)
		s.words = grown
	}
	mask := uint64(1) << (seq & 63)
	if s.words[w]&mask != 0 {
		return true
	}
	s.words[w] |= mask
	s.n++
	return false
}

func (s *seqSet) has(seq uint32) bool {
	w := int(seq >> 6)
	return w < len(s.words) && s.words[w]&(uint64(1)<<(seq&63)) != 0
}

// missingBelow counts the sequence numbers in [0, n) that are not set.
func (s *seqSet) missingBelow(n int64) int64 {
	var have int64
	full := int(n >> 6)
	for i := 0; i < full && i < len(s.words); i++ {
		have += int64(bits.OnesCount64(s.words[i]))
	}
	if rem := n & 63; rem != 0 && full < len(s.words) {
		have += int64(bits.OnesCount64(s.words[full] & (uint64(1)<<rem - 1)))
	}
	return n - have
}

// firstMissing returns up to k sequence numbers in [0, n) that are not set,
// for the failure message.
func (s *seqSet) firstMissing(n int64, k int) []int64 {
	var out []int64
	for seq := int64(0); seq < n && len(out) < k; seq++ {
		if seq>>6 < int64(len(s.words)) && s.words[seq>>6] == ^uint64(0) {
			seq |= 63 // the whole word is present
			continue
		}
		if !s.has(uint32(seq)) {
			out = append(out, seq)
		}
	}
	return out
}

// countAbove counts the set bits at or above n: messages received that were
// never counted as published.
func (s *seqSet) countAbove(n int64) int64 {
	return s.n - (n - s.missingBelow(n))
}

// histogram is a log-linear histogram of non-negative values (nanoseconds
// here): 128 linear sub-buckets per power of two, so a quantile is within
// 1/128 (0.8 %) of the true value. Recording does not allocate. Not safe for
// concurrent use.
type histogram struct {
	counts [64 * histSub]uint64
	total  uint64
	sum    float64
	min    uint64
	max    uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits // ≥ 1
	return e*histSub + int(v>>(e-1)) - histSub
}

// histLow is the smallest value that falls in bucket i.
func histLow(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i / histSub
	sub := uint64(i%histSub) + histSub
	return sub << (e - 1)
}

func (h *histogram) record(v uint64) {
	h.counts[histIndex(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// merge adds o's counts to h.
func (h *histogram) merge(o *histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// quantile returns the value at quantile q in [0, 1]: the midpoint of the
// bucket holding it, clamped to the recorded min and max; the max itself
// for the last rank. It is 0 for an empty histogram.
func (h *histogram) quantile(q float64) float64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	if rank == h.total {
		return float64(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			mid := float64(lo) + float64(hi-lo-1)/2
			return math.Min(math.Max(mid, float64(h.min)), float64(h.max))
		}
	}
	return float64(h.max)
}

func (h *histogram) mean() float64 {
	if h.total == 0 {
		return 0
	}
	return h.sum / float64(h.total)
}

// median returns the median of xs (the mean of the middle two for an even
// count), 0 for none. xs is not changed.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
