package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports; reading it needs
// sysconf, which needs cgo.
const clockTicks = 100

// procStat is one reading of a process's memory and CPU.
type procStat struct {
	rssKiB   int64 // VmRSS
	cpuTicks int64 // utime + stime
	at       time.Time
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat. pid 0 means this
// process.
func readProc(pid int) (procStat, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	st := procStat{at: time.Now()}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return st, err
	}
	st.rssKiB, err = parseVmRSS(status)
	if err != nil {
		return st, fmt.Errorf("%s/status: %w", dir, err)
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return st, err
	}
	st.cpuTicks, err = parseCPUTicks(stat)
	if err != nil {
		return st, fmt.Errorf("%s/stat: %w", dir, err)
	}
	return st, nil
}

// parseVmRSS returns the VmRSS line of /proc/<pid>/status in KiB.
func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) < 1 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, errors.New("no VmRSS line")
}

// parseCPUTicks returns utime+stime (fields 14 and 15) of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted after its last ')'.
func parseCPUTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, errors.New("too few fields")
	}
	ut, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	stt, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return ut + stt, nil
}

// cpuPercent is the CPU used between two readings, in percent of one core.
func cpuPercent(a, b procStat) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return float64(b.cpuTicks-a.cpuTicks) / clockTicks / wall * 100
}

// sampler polls a process every 200 ms for its peak RSS, and keeps the first
// and last readings for its CPU use.
type sampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}

	mu          sync.Mutex
	first, last procStat
	peakKiB     int64
	err         error
}

func startSampler(pid int) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	st, err := readProc(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	if s.first.at.IsZero() {
		s.first = st
	}
	s.last = st
	s.peakKiB = max(s.peakKiB, st.rssKiB)
}

// finish stops polling and returns the peak and last RSS and the mean CPU
// use over the sampled time.
func (s *sampler) finish() (peakKiB, lastKiB int64, cpuPct float64, err error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakKiB, s.last.rssKiB, cpuPercent(s.first, s.last), s.err
}

// systemBusy reads the first line of /proc/stat: the ticks all CPUs spent
// busy (neither idle nor waiting for I/O) since boot.
func systemBusy() (ticks int64, at time.Time, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, time.Time{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return 0, time.Time{}, errors.New("/proc/stat: no cpu line")
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("/proc/stat: %w", err)
		}
		if i != 3 && i != 4 { // idle, iowait
			ticks += n
		}
	}
	return ticks, time.Now(), nil
}

// busySince returns the CPU the whole machine used since systemBusy
// returned t0 at a0, in percent of one core; -1 if unknown.
func busySince(t0 int64, a0 time.Time) float64 {
	t1, a1, err := systemBusy()
	if err != nil || a0.IsZero() {
		return -1
	}
	wall := a1.Sub(a0).Seconds()
	if wall <= 0 {
		return -1
	}
	return float64(t1-t0) / clockTicks / wall * 100
}
