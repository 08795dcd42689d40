package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

// seenBody marks, in writer.refs during load, a message whose body was
// found: counts stay far below it.
const seenBody = 1 << 31

// load checks the format marker and rebuilds the writer's state from disk:
// queues, delivered marks and reference counts. It also removes what a
// crash in the middle of a batch too large for one Badger transaction can
// leave behind (references of queues that are gone, bodies nobody
// references), so that neither lingers on disk for ever. A record that does
// not decode is an error: the broker must not start on half its data.
func (s *Store) load() error {
	w := &s.w
	w.opening = true
	defer func() { w.opening = false }()
	w.lastTs = s.db.MaxVersion()
	s.readTs.Store(w.lastTs)
	// Everything on disk is committed and nothing reads below lastTs:
	// compactions may drop the versions under it from the start, not only
	// after the first commit.
	s.db.SetDiscardTs(w.lastTs)
	if err := s.checkFormat(); err != nil {
		return err
	}
	crashed, err := s.has(runningKey)
	if err != nil {
		return err
	}

	// byKey finds a queue by its key without the kind byte, which its r/
	// and d/ keys share: keys with hashed names cannot be parsed back.
	byKey := make(map[string]*queueState)
	var migrated int
	err = s.scan(kindPrefix(kindQueue), w.lastTs, true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil // deleted
		}
		r, err := decodeQueue(key, val)
		if err != nil {
			return err
		}
		k := qkey{r.VHost, r.Name}
		qs := &queueState{key: k, rec: r}
		w.queues[k] = qs
		canon := entityKey(nil, kindQueue, r.VHost, r.Name)
		byKey[string(canon[1:])] = qs
		if !bytes.Equal(canon, key) {
			s.migrate(key, canon, val, r.VHost, r.Name)
			migrated++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read queues: %w", err)
	}
	// queueOf finds the queue of an r/ or d/ key whose part after the kind
	// byte, less the seq of an r/ key, is rest; canon is the queue's key
	// of that kind when key is in the legacy form, to be rewritten.
	queueOf := func(key, rest []byte, kind byte) (qs *queueState, canon []byte, ok bool) {
		if qs := byKey[string(rest)]; qs != nil {
			return qs, nil, true
		}
		vhost, name, form, ok := parseEntityKey(append([]byte{kind}, rest...))
		if !ok {
			return nil, nil, false
		}
		if form == formLegacy {
			if qs := w.queues[qkey{vhost, name}]; qs != nil {
				return qs, entityKey(nil, kind, vhost, name), true
			}
		}
		return nil, nil, true
	}

	var orphanDelivered, orphanRefs, orphanBodies, refsWithoutBody int
	err = s.scan(kindPrefix(kindDelivered), w.lastTs, true, func(key, val []byte) error {
		qs, canon, ok := queueOf(key, key[1:], kindDelivered)
		seq, ok2 := decodeDelivered(val)
		if !ok || !ok2 {
			return corrupt("delivered mark", key)
		}
		if qs != nil {
			qs.delivered = seq
			if canon != nil {
				w.ov.del(key)
				w.ov.set(canon, val, false)
				migrated++
			}
		} else {
			w.ov.del(key)
			orphanDelivered++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read delivered marks: %w", err)
	}

	var maxID uint64
	var totalRefs int
	var dmg damage
	verifyStart := time.Now()
	var verified, verifiedBytes int64
	// lastSeq is, after a crash, the newest reference of each queue.
	var lastSeq map[*queueState]uint64
	if crashed {
		lastSeq = make(map[*queueState]uint64)
	}
	err = s.scan(kindPrefix(kindRef), w.lastTs, true, func(key, val []byte) error {
		if len(key) < 2+8 {
			return corrupt("message reference key", key)
		}
		qs, canon, ok := queueOf(key, key[1:len(key)-8], kindRef)
		if !ok {
			return corrupt("message reference key", key)
		}
		seq := binary.BigEndian.Uint64(key[len(key)-8:])
		r, ok := decodeRef(val)
		if !ok {
			return corrupt("message reference", key)
		}
		if canon != nil {
			w.ov.del(key)
			w.ov.set(binary.BigEndian.AppendUint64(canon, seq), val, false).msgID = r.id
			migrated++
		}
		if qs == nil {
			w.ov.del(key)
			orphanRefs++
			return nil
		}
		if crashed {
			lastSeq[qs] = max(lastSeq[qs], seq)
		}
		totalRefs++
		w.refs[r.id]++
		maxID = max(maxID, r.id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read message references: %w", err)
	}

	// Bodies: every referenced one is read back once (Badger verifies each
	// value's checksum), so that a damaged or missing value-log file is
	// found now, not by the first consumer (see check.go).
	err = s.scanItems(kindPrefix(kindMessage), w.lastTs, func(item *badger.Item) error {
		key := item.Key()
		id, ok := parseMessageKey(key)
		if !ok {
			return corrupt("message key", key)
		}
		maxID = max(maxID, id)
		if n := w.refs[id]; n != 0 {
			verified++
			verifiedBytes += item.ValueSize()
			// Each value's place is checked; with Repair each is read too,
			// its checksum verified (some 1 s per 100 MB here), so that the
			// report is exact. Without, flipped bytes show when read.
			check := s.checkPointer
			if s.repair {
				check = func(item *badger.Item) error { return s.value(item, func([]byte) error { return nil }) }
			}
			if err := check(item); err != nil {
				dmg.add(valueLogFile(s.dir, item), fmt.Errorf("message %d: %w", id, err))
				if dmg.bodies == nil {
					dmg.bodies = map[uint64]error{}
				}
				dmg.bodies[id] = err
				return nil
			}
			w.refs[id] = n | seenBody
		} else {
			w.ov.del(key)
			orphanBodies++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	missing := make(map[uint64]bool)
	for id, n := range w.refs {
		if n&seenBody == 0 {
			missing[id] = true
			delete(w.refs, id)
		} else {
			w.refs[id] = n &^ seenBody
		}
	}
	if len(missing) > 0 {
		// Only damage gets here: a body is always written before, and
		// deleted after, the references to it. Without Options.Repair that
		// refuses the start; with it the references go, counted per queue.
		dmg.perQ = map[*queueState]int{}
		err = s.scan(kindPrefix(kindRef), w.lastTs, true, func(key, val []byte) error {
			if r, ok := decodeRef(val); ok && missing[r.id] {
				if qs, _, _ := queueOf(key, key[1:len(key)-8], kindRef); qs != nil {
					dmg.perQ[qs]++
				}
				if _, seen := w.ov.lookup(key); !seen {
					w.ov.del(key)
					refsWithoutBody++
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read message references: %w", err)
		}
		for i := range w.ov.writes {
			// References rewritten above from the legacy form.
			if wr := &w.ov.writes[i]; wr.live() && wr.key[0] == kindRef && missing[wr.msgID] {
				w.ov.del(wr.key)
				refsWithoutBody++
			}
		}
	}

	// Retained messages count towards MaxMessageID (see encodeRetained).
	// Their values are mostly in the value log, and are read whole once, as
	// bodies are, so that damage is found now.
	err = s.scanItems(kindPrefix(kindRetained), w.lastTs, func(item *badger.Item) error {
		key := item.Key()
		var val []byte
		err := s.checkPointer(item)
		if err == nil {
			err = s.value(item, func(v []byte) error { val = v; return nil })
		}
		if err != nil {
			name := fmt.Sprintf("%q", key[2:min(len(key), 66)])
			if vhost, topic, form, ok := parseEntityKey(key); ok && form != formHashed {
				name = vhost + "/" + topic
			}
			dmg.add(valueLogFile(s.dir, item), fmt.Errorf("retained message %s: %w", name, err))
			dmg.topics = append(dmg.topics, name)
			dmg.tkeys = append(dmg.tkeys, item.KeyCopy(nil))
			return nil
		}
		if len(val) == 0 {
			return nil // deleted
		}
		vhost, topic, inner, form, keyOK := entityNames(key, val)
		id, ok := retainedID(inner)
		if !ok || !keyOK {
			return corrupt("retained message", key)
		}
		maxID = max(maxID, id)
		if form == formLegacy {
			s.migrate(key, entityKey(nil, kindRetained, vhost, topic), inner, vhost, topic)
			migrated++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read retained messages: %w", err)
	}
	s.maxID.Store(maxID)
	s.log.Info("store verified", "messages", verified, "bytes", verifiedBytes, "queues", len(w.queues),
		"took", time.Since(verifyStart).Round(time.Millisecond))
	if err := s.repairDamage(&dmg, totalRefs); err != nil {
		return err
	}
	n, err := s.migrateTopology()
	if err != nil {
		return err
	}
	migrated += n
	if migrated > 0 {
		s.log.Info("rewrote keys holding names over 255 bytes into the hashed form", "keys", migrated)
	}

	if orphanRefs+orphanBodies+orphanDelivered+refsWithoutBody > 0 {
		s.log.Warn("removing records left behind by an interrupted batch",
			"refs_of_deleted_queues", orphanRefs, "unreferenced_bodies", orphanBodies,
			"delivered_marks_of_deleted_queues", orphanDelivered, "refs_without_body", refsWithoutBody)
	}
	if crashed {
		s.markAllDelivered(lastSeq)
	} else {
		w.ov.set(runningKey, nil, false)
	}
	// Synced before any client is served: a crash from now on is seen at
	// the next Open.
	if err := s.commit(); err != nil {
		return fmt.Errorf("mark the store open: %w", err)
	}
	s.readTs.Store(w.lastTs)
	s.db.SetDiscardTs(w.lastTs)
	return nil
}

// repairDamage refuses a store with unreadable messages, or with
// Options.Repair drops them (the references are deleted already) and
// reports each queue's loss.
func (s *Store) repairDamage(d *damage, total int) error {
	if !d.any() {
		return nil
	}
	if !s.repair {
		return fmt.Errorf("%w: %s; start with --repair to drop what cannot be read (and report it), or restore the data directory from a backup",
			ErrDamaged, d.summary(total))
	}
	w := &s.w
	r := &s.repaired
	r.Files = d.fileList()
	r.Messages = map[string]int{}
	for id := range d.bodies {
		w.key = messageKey(w.key[:0], id)
		w.ov.del(w.key)
	}
	for qs, n := range d.perQ {
		r.Messages[qs.key.vhost+"/"+qs.key.name] = n
		s.log.Warn("repair: messages lost", "vhost", qs.key.vhost, "queue", qs.key.name, "messages", n)
	}
	for i, key := range d.tkeys {
		w.ov.del(key) // a marker
		s.log.Warn("repair: retained message lost", "topic", d.topics[i])
	}
	r.Retained, r.Topics = len(d.topics), d.topics
	s.log.Warn("repair: damaged store opened; what could not be read is dropped", "summary", d.summary(total))
	return nil
}

// migrate replaces the record at key, in the legacy form (a long name
// written as it is), with the same record at canon, its key with hashed
// names; val is the record's value without names.
func (s *Store) migrate(key, canon, val []byte, names ...string) {
	w := &s.w
	w.ov.del(key) // a marker for the kinds that need one
	w.ov.set(canon, named(nil, val, names...), false)
}

// migrateTopology rewrites the exchanges and bindings whose keys are in the
// legacy form, and returns how many. Load reads neither otherwise; both are
// few.
func (s *Store) migrateTopology() (int, error) {
	w := &s.w
	n := 0
	err := s.scan(kindPrefix(kindExchange), w.lastTs, true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil
		}
		if vhost, name, form, ok := parseEntityKey(key); ok && form == formLegacy {
			s.migrate(key, entityKey(nil, kindExchange, vhost, name), val, vhost, name)
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("read exchanges: %w", err)
	}
	err = s.scan(kindPrefix(kindBinding), w.lastTs, true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil
		}
		if vhost, b, form, ok := parseBindingKey(key); ok && form == formLegacy && len(val) > 0 {
			s.migrate(key, bindingKey(nil, vhost, &b, val[1:]), val, vhost, b.Source, b.Destination, b.RoutingKey)
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("read bindings: %w", err)
	}
	return n, nil
}

// markAllDelivered handles the start after a crash. The delivered marks
// ride along with commits rather than costing one each, so the crash may
// have lost the latest ones: every message a queue holds (lastSeq, its
// newest) may have been delivered, and comes back redelivered, as
// RabbitMQ's classic queues do after an unclean shutdown. The raised marks
// are written, so that a clean restart before those messages are
// delivered again still reports them redelivered.
func (s *Store) markAllDelivered(lastSeq map[*queueState]uint64) {
	w := &s.w
	raised := 0
	for qs, seq := range lastSeq {
		if seq <= qs.delivered {
			continue
		}
		qs.delivered = seq
		w.key = entityKey(w.key[:0], kindDelivered, qs.key.vhost, qs.key.name)
		w.val = encodeDelivered(w.val[:0], seq)
		w.ov.set(w.key, w.val, false)
		raised++
	}
	s.log.Warn("the previous run did not shut down cleanly: the messages it left in queues come back redelivered",
		"queues", raised)
}

// scanItems calls fn for every item with prefix at version ts, its value
// unread: fn reads it, and handles a read error itself.
func (s *Store) scanItems(prefix []byte, ts uint64, fn func(item *badger.Item) error) error {
	txn := s.db.NewTransactionAt(ts, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := fn(it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// has reports whether key is stored, at the last committed version.
func (s *Store) has(key []byte) (bool, error) {
	txn := s.db.NewTransactionAt(s.w.lastTs, false)
	defer txn.Discard()
	_, err := txn.Get(key)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	return true, nil
}

// checkFormat accepts a store written with this layout, and marks a new,
// empty one; anything else is refused.
func (s *Store) checkFormat() error {
	txn := s.db.NewTransactionAt(s.w.lastTs, false)
	defer txn.Discard()
	item, err := txn.Get(formatKey)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		it := txn.NewIterator(badger.IteratorOptions{})
		it.Rewind()
		empty := !it.Valid()
		it.Close()
		if !empty {
			return fmt.Errorf("holds Badger data but no %s marker: not a ferrymq store", formatKey)
		}
		s.w.ov.set(formatKey, []byte{formatVersion}, false)
		if err := s.commit(); err != nil {
			return fmt.Errorf("initialise: %w", err)
		}
		s.readTs.Store(s.w.lastTs)
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", formatKey, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return fmt.Errorf("read %s: %w", formatKey, err)
	}
	switch {
	case len(v) != 1:
		return fmt.Errorf("%s is %x, not a format version: not a ferrymq store", formatKey, v)
	case v[0] != formatVersion:
		return fmt.Errorf("written in store format %d; this ferrymq reads format %d only", v[0], formatVersion)
	}
	return nil
}

// read runs fn over the committed records with prefix, for the Recovery
// methods.
func (s *Store) read(prefix []byte, values bool, fn func(key, val []byte) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	return s.scan(prefix, s.readTs.Load(), values, fn)
}

// callerError marks an error returned by a Recovery callback, which is
// passed back unwrapped.
type callerError struct{ err error }

func (e callerError) Error() string { return e.err.Error() }

func unwrapCaller(err error, what string) error {
	var ce callerError
	if errors.As(err, &ce) {
		return ce.err
	}
	if err != nil {
		return fmt.Errorf("persistence: read %s: %w", what, err)
	}
	return nil
}

// Exchanges implements core.Recovery.
func (s *Store) Exchanges(fn func(vhost string, d core.ExchangeDecl) error) error {
	err := s.read(kindPrefix(kindExchange), true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil // deleted
		}
		vhost, d, err := decodeExchange(key, val)
		if err != nil {
			return err
		}
		if err := fn(vhost, d); err != nil {
			return callerError{err}
		}
		return nil
	})
	return unwrapCaller(err, "exchanges")
}

// Queues implements core.Recovery.
func (s *Store) Queues(fn func(r core.QueueRecord) error) error {
	err := s.read(kindPrefix(kindQueue), true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil // deleted
		}
		r, err := decodeQueue(key, val)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return callerError{err}
		}
		return nil
	})
	return unwrapCaller(err, "queues")
}

// Bindings implements core.Recovery.
func (s *Store) Bindings(fn func(vhost string, b core.BindingRecord) error) error {
	err := s.read(kindPrefix(kindBinding), true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil // deleted
		}
		vhost, b, err := decodeBinding(key, val)
		if err != nil {
			return err
		}
		if err := fn(vhost, b); err != nil {
			return callerError{err}
		}
		return nil
	})
	return unwrapCaller(err, "bindings")
}

// Messages implements core.Recovery. It reads the queue's references in
// seq order (the key ends in the big-endian seq) and never a message body:
// a reference is a few bytes in the LSM tree.
func (s *Store) Messages(vhost, queue string, fn func(m core.StoredMessage) error) error {
	var delivered uint64
	dkey := entityKey(nil, kindDelivered, vhost, queue)
	err := s.read(dkey, true, func(key, val []byte) error {
		if seq, ok := decodeDelivered(val); ok && len(key) == len(dkey) {
			delivered = seq
		}
		return nil
	})
	if err != nil {
		return unwrapCaller(err, "delivered mark")
	}
	prefix := entityKey(nil, kindRef, vhost, queue)
	err = s.read(prefix, true, func(key, val []byte) error {
		if len(key) != len(prefix)+8 {
			return nil // not a reference: names are escaped, so no other queue's keys share the prefix
		}
		r, ok := decodeRef(val)
		if !ok {
			return corrupt("message reference", key)
		}
		seq := binary.BigEndian.Uint64(key[len(prefix):])
		m := core.StoredMessage{
			Seq: seq, ID: r.id, Size: r.size, Priority: r.priority, Deadline: r.deadline,
			Delivered: seq <= delivered,
		}
		if err := fn(m); err != nil {
			return callerError{err}
		}
		return nil
	})
	return unwrapCaller(err, "messages")
}

// MaxMessageID implements core.Recovery.
func (s *Store) MaxMessageID() uint64 { return s.maxID.Load() }
