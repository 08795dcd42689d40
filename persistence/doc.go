// Package persistence will hold the Badger-backed store that implements
// core's store interface, so durable queues and persistent messages survive a
// restart; confirms and PUBACKs leave only after the store has synced. A
// later issue fills it in; until then every queue lives in memory.
package persistence
