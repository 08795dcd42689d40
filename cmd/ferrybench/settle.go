package main

import (
	"context"
	"time"
)

// settleMax bounds how long settle waits for a busy broker; otherWait,
// how long it waits for other processes.
const (
	settleMax = 15 * time.Second
	otherWait = 3 * time.Second
)

// settle waits until the broker has calmed down from the previous run
// (closing 10,000 connections keeps RabbitMQ busy for a while; a store
// compacts), at most settleMax, and then, at most otherWait from the
// start, until the rest of the machine is fairly idle too: on a shared
// machine other work comes and goes, and interleaving spreads what remains
// over all brokers. It reports whether the broker calmed down, with the
// last CPU readings (percent of one core).
func settle(ctx context.Context, pid int) (quiet bool, broker, other float64) {
	start := time.Now()
	for ctx.Err() == nil {
		a, errA := readProc(pid)
		sys0, at, errS := systemBusy()
		time.Sleep(300 * time.Millisecond)
		b, errB := readProc(pid)
		total := busySince(sys0, at)
		if errA != nil || errB != nil || errS != nil || total < 0 {
			return true, 0, 0 // nothing to wait for that we can see
		}
		broker = cpuPercent(a, b)
		other = max(0, total-broker)
		if broker < 15 && (other < 40 || time.Since(start) > otherWait) {
			return true, broker, other
		}
		if time.Since(start) > settleMax {
			return false, broker, other
		}
	}
	return false, broker, other
}
