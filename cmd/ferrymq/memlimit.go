package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/ferrymq/ferrymq/core"
)

// defaultMemoryFraction is the memory limit's default share of the
// machine's memory (or of the cgroup's limit), as RabbitMQ's
// vm_memory_high_watermark.relative = 0.4.
const defaultMemoryFraction = 0.4

// memoryUnits are the suffixes a memory_limit may have: IEC ones (and
// their one-letter forms) count in 1024s, SI ones in 1000s, as RabbitMQ
// reads vm_memory_high_watermark.absolute.
var memoryUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"k", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// parseMemoryLimit reads a memory_limit: a size in bytes with an optional
// unit ("512MiB", "2GB", "1073741824"), a fraction of total ("0.4"; any
// number with a point, at most 1), "0" for no limit, or "" for the
// default fraction. total is the memory the machine or cgroup allows,
// 0 if unknown: a fraction of it then means no limit.
func parseMemoryLimit(s string, total int64) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return int64(defaultMemoryFraction * float64(total)), nil
	}
	num, mult := s, 0.0
	for _, u := range memoryUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("memory_limit %q: want a size such as 512MiB or 2GB, a fraction of memory such as 0.4, or 0 for none", s)
	}
	if mult == 0 && strings.Contains(num, ".") {
		if v > 1 {
			return 0, fmt.Errorf("memory_limit %q: a fraction of memory is at most 1 (for bytes, give no point, or a unit)", s)
		}
		return int64(v * float64(total)), nil
	}
	if mult == 0 {
		mult = 1
	}
	if v*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("memory_limit %q: too large", s)
	}
	return int64(v * mult), nil
}

// totalMemory is the memory ferrymq may use: the machine's (MemTotal in
// /proc/meminfo), or the cgroup's limit if it is lower (v2 memory.max, v1
// memory.limit_in_bytes), as RabbitMQ reads it. 0 if neither is known.
func totalMemory() int64 {
	total, _ := memTotal("/proc/meminfo")
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max", or v1's "no limit" (a page-rounded MaxInt64).
		if err != nil || v <= 0 || v >= 1<<60 {
			continue
		}
		if total == 0 || v < total {
			total = v
		}
	}
	return total
}

// memTotal reads MemTotal from a meminfo file.
func memTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: MemTotal %q: %w", path, rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New(path + ": no MemTotal")
}

// startMemoryLimit applies memory_limit: the broker's memory alarm above
// it (core.Broker.WatchMemory), and a Go GC soft limit a quarter above it
// (debug.SetMemoryLimit), so that garbage is collected before memory
// passes the limit rather than counted against it. The soft limit sits
// above the alarm's limit because a broker held at its limit by queued
// messages would otherwise collect without end. It returns what stops
// the watch.
func startMemoryLimit(b *core.Broker, cfg *Config, log *slog.Logger) (stop func()) {
	total := totalMemory()
	limit, err := parseMemoryLimit(cfg.MemoryLimit, total)
	if err != nil { // validated before
		log.Error("bad memory_limit", "err", err)
		return func() {}
	}
	if limit <= 0 {
		if cfg.MemoryLimit == "" {
			log.Warn("memory limit off: the machine's memory is unknown", "memory_limit", "0.4")
		}
		return func() {}
	}
	soft := limit + limit/4
	if prev := debug.SetMemoryLimit(-1); prev < soft {
		soft = prev // GOMEMLIMIT set lower by the operator
	}
	debug.SetMemoryLimit(soft)
	log.Info("memory limit", "limit_bytes", limit, "clears_below_bytes", limit/10*9, "gc_soft_limit_bytes", soft, "system_bytes", total)
	return b.WatchMemory(core.MemoryLimit{High: limit})
}
