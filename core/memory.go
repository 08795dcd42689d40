package core

import "sync/atomic"

// DefaultMemoryBudget is how many bytes of stored message bodies a broker
// keeps in memory before it pages new ones out to the store.
const DefaultMemoryBudget = 256 << 20

// memBudget is the broker-wide allowance for bodies of stored messages held
// in memory. Transient messages are not counted: they have nowhere else to
// live. Paging keeps a queue of a million persistent messages at a few tens
// of bytes each instead of its bodies' size (RabbitMQ's lazy/CQv2 queues).
type memBudget struct {
	limit    int64 // <= 0: never page out
	resident atomic.Int64
}

// over reports whether holding n more bytes would exceed the budget.
func (m *memBudget) over(n int64) bool {
	return m.limit > 0 && m.resident.Load()+n > m.limit
}
