package bridge

// The spool: a FIFO of MQTT messages in a bbolt file, bounded by bytes.
//
// Durability. The file is opened with bbolt's NoSync: a commit writes its
// pages with pwrite(2) into the OS page cache and returns without
// fdatasync(2). A message whose Append returned is therefore in the kernel
// and survives the death of the process, kill -9 included (the page cache
// belongs to the kernel, not to the process, and a commit's meta page is
// written last, so a commit cut short by the kill is simply not there);
// TestSpoolKill9 checks this by SIGKILLing a child that appends as fast as
// it can. What NoSync gives up is power loss and kernel crashes: the dirty
// pages the kernel had not yet written back (by default up to about 30 s of
// Appends and Deletes, vm.dirty_expire_centisecs) are lost, and because
// nothing orders a commit's data pages before its meta page on the disk,
// the file can be left inconsistent. OpenSpool then returns an error naming
// the file (the gateway refuses to start; removing the file starts an empty
// spool), or, if the damage is inside message values (each has a CRC-32C),
// Peek drops those messages (Stats().Corrupt); the detection is best
// effort, bbolt does not checksum its pages. fsync after every commit
// would cost two fdatasyncs per Append and per Delete: 0.5 to 1.5 ms per
// 1 KiB Append on the test VM's disk (7 to 10 times the NoSync cost; see
// BenchmarkSpoolAppend's fsync variants), far more on an SD card, for a
// spool whose point is to absorb bursts while the link is down.
//
// Cost. bbolt copies on write: a commit rewrites the leaf and branch pages
// it touches, the freelist and a meta page. Appending 1 KiB writes about
// 28 KiB to the page cache; appending 600 KiB about 5.7 times that, since
// bbolt keeps at least two (up to four) values in a leaf and rewrites the
// whole leaf (and the head's, when the bound discards). A Delete is another
// commit of a few pages.
//
// Size on disk. bbolt files do not shrink: freed pages are reused, but the
// file stays as large as its peak, which is bounded by maxBytes plus bbolt's
// overhead (page rounding, the leaves' half-empty pages, branch pages, the
// freelist, and growth in steps of up to 16 MiB).
//
// Memory. The spool keeps only counters in memory. An Append holds one
// encoded copy of its message until it commits and bbolt a few more (the
// leaf it rewrites: up to five messages), a Peek what it returns (bounded
// by its n and maxBytes, or one message), bbolt its freelist (8 bytes per
// free page). The file itself is mapped read-only by bbolt: that is page
// cache, not heap.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// MinSpoolBytes is the smallest byte bound OpenSpool accepts (64 KiB).
const MinSpoolBytes = 64 << 10

// SpoolFile is the name of the spool's file in its directory.
const SpoolFile = "spool.db"

// ErrTooLarge is returned by Append for a message whose Size exceeds the
// spool's byte bound.
var ErrTooLarge = errors.New("spool: message larger than the spool")

// ErrClosed is returned by the Spool's methods after Close.
var ErrClosed = errors.New("spool: closed")

// Message is one spooled MQTT message.
type Message struct {
	// Seq is assigned by Append: it starts at 1, increases, and is never
	// reused within one spool file (not even after the spool was emptied
	// and reopened).
	Seq uint64
	// Topic is the MQTT topic (at most 65535 bytes).
	Topic string
	// Payload is the message's payload, a copy owned by the caller.
	Payload []byte
	// QoS is the MQTT QoS, 0 to 2.
	QoS byte
	// Retain is the MQTT retain flag.
	Retain bool
	// Spooled is when the message was appended (wall clock, stored with
	// nanosecond precision, no monotonic reading).
	Spooled time.Time
}

// SpoolStats are a spool's contents and counters. The counters count since
// OpenSpool (they are not stored in the file).
type SpoolStats struct {
	// Messages is the number of messages stored now.
	Messages int64 `json:"messages"`
	// Bytes is the sum of the Size of the stored messages, bytes
	// (at most MaxBytes).
	Bytes int64 `json:"bytes"`
	// MaxBytes is the spool's byte bound, bytes.
	MaxBytes int64 `json:"max_bytes"`
	// Discarded counts the messages deleted, oldest first, to keep Bytes
	// within MaxBytes; DiscardedBytes is the sum of their Size, bytes.
	Discarded      int64 `json:"discarded"`
	DiscardedBytes int64 `json:"discarded_bytes"`
	// TooLarge counts the messages Append refused with ErrTooLarge.
	TooLarge int64 `json:"too_large"`
	// Corrupt counts the stored messages found undecodable (by OpenSpool
	// or Peek) and deleted.
	Corrupt int64 `json:"corrupt"`
	// Oldest is when the oldest stored message was appended; zero if the
	// spool is empty (or its oldest message is unreadable).
	Oldest time.Time `json:"oldest,omitzero"`
}

// Spool is a FIFO of messages in a bbolt file (DIR/spool.db), bounded by
// bytes: the sum of Size of the stored messages stays at most the bound
// given to OpenSpool, the oldest messages being discarded to make room.
// Its methods are safe for concurrent use.
type Spool struct {
	path     string
	maxBytes int64
	db       *bolt.DB

	// wmu serialises the write transactions, so that the counters follow
	// the file; next is the Seq the next Append gets (also stored).
	wmu  sync.Mutex
	next uint64

	// mu guards the fields below. They change with wmu held too, but for
	// st.TooLarge, so writers may read them holding wmu only.
	mu     sync.Mutex
	st     SpoolStats
	wait   chan struct{} // closed at the next Append (nil: nobody waits)
	closed bool
}

var (
	bucketMsgs = []byte("msgs") // Seq (8 bytes, big-endian) → value
	bucketMeta = []byte("meta") // keyNext → the next Seq (8 bytes, big-endian)
	keyNext    = []byte("next")
)

// Value layout (integers big-endian):
//
//	[0]      format version (1)
//	[1]      flags: bits 0–1 QoS, bit 2 retain, the others zero
//	[2:4]    topic length
//	[4:12]   spooled, Unix nanoseconds
//	[12:16]  CRC-32C of the topic, the payload and bytes [0:12], in that order
//	[16:]    topic, then payload
const (
	hdrLen     = 16
	formatV1   = 1
	flagRetain = 1 << 2
	maxTopic   = math.MaxUint16
	overhead   = 64 // what Size adds to a message's topic and payload
	// lockTimeout bounds the wait for bbolt's file lock (flock), held by
	// another process using the spool, or by this one: a second OpenSpool
	// of the same directory fails rather than waiting forever.
	lockTimeout = time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errNotFound rolls back a Delete of a missing message.
var errNotFound = errors.New("spool: not found")

// Size is what a message counts for in the spool's byte bound, bytes:
// len(topic) + payload (the payload's length) + 64.
func Size(topic string, payload int) int64 {
	return int64(len(topic)) + int64(payload) + overhead
}

// entrySize is Size of the stored value v, from its length only (so that
// it is the same for undecodable values).
func entrySize(v []byte) int64 {
	return int64(max(len(v)-hdrLen, 0)) + overhead
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// encode builds a value without its time and checksum (sealed later, under
// the lock, by seal) and returns it with the CRC of its topic and payload.
func encode(topic string, payload []byte, qos byte, retain bool) ([]byte, uint32) {
	v := make([]byte, hdrLen+len(topic)+len(payload))
	v[0] = formatV1
	v[1] = qos
	if retain {
		v[1] |= flagRetain
	}
	binary.BigEndian.PutUint16(v[2:4], uint16(len(topic)))
	copy(v[hdrLen:], topic)
	copy(v[hdrLen+len(topic):], payload)
	return v, crc32.Update(0, castagnoli, v[hdrLen:])
}

// seal stores the spooled time and the checksum in v's header.
func seal(v []byte, crc uint32, spooled time.Time) {
	binary.BigEndian.PutUint64(v[4:12], uint64(spooled.UnixNano()))
	binary.BigEndian.PutUint32(v[12:16], crc32.Update(crc, castagnoli, v[:12]))
}

// view is a decoded value whose topic and payload still point into bbolt's
// memory (valid only inside the transaction).
type view struct {
	seq            uint64
	topic, payload []byte
	qos            byte
	retain         bool
	spooled        time.Time
}

func decode(k, v []byte) (view, error) {
	if len(k) != 8 {
		return view{}, fmt.Errorf("key of %d bytes", len(k))
	}
	if len(v) < hdrLen {
		return view{}, fmt.Errorf("value of %d bytes", len(v))
	}
	if v[0] != formatV1 {
		return view{}, fmt.Errorf("format %d", v[0])
	}
	if v[1]&^(flagRetain|3) != 0 || v[1]&3 > 2 {
		return view{}, fmt.Errorf("flags %#x", v[1])
	}
	tl := int(binary.BigEndian.Uint16(v[2:4]))
	if tl > len(v)-hdrLen {
		return view{}, fmt.Errorf("topic of %d bytes in a value of %d", tl, len(v))
	}
	crc := crc32.Update(crc32.Update(0, castagnoli, v[hdrLen:]), castagnoli, v[:12])
	if crc != binary.BigEndian.Uint32(v[12:16]) {
		return view{}, errors.New("checksum mismatch")
	}
	return view{
		seq:     binary.BigEndian.Uint64(k),
		topic:   v[hdrLen : hdrLen+tl],
		payload: v[hdrLen+tl:],
		qos:     v[1] & 3,
		retain:  v[1]&flagRetain != 0,
		spooled: time.Unix(0, int64(binary.BigEndian.Uint64(v[4:12]))),
	}, nil
}

// message copies m out of bbolt's memory.
func (m view) message() Message {
	return Message{
		Seq:     m.seq,
		Topic:   string(m.topic),
		Payload: bytes.Clone(m.payload),
		QoS:     m.qos,
		Retain:  m.retain,
		Spooled: m.spooled,
	}
}

// headTime is the spooled time of b's first message (zero: none, or
// unreadable).
func headTime(b *bolt.Bucket) time.Time {
	_, v := b.Cursor().First()
	if len(v) < hdrLen || v[0] != formatV1 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[4:12])))
}

// deleteEntry deletes k (whose value is v: nil for a nested bucket, which
// has no business in the spool) from b.
func deleteEntry(b *bolt.Bucket, k, v []byte) error {
	if v == nil && b.Bucket(k) != nil {
		return b.DeleteBucket(k)
	}
	return b.Delete(k)
}

// OpenSpool opens (or creates) DIR/spool.db (DIR is created 0700 if
// missing, the file 0600); it recovers the count, bytes and the next Seq
// from the file with one scan of its keys, which reads the leaf pages
// (small messages whole, large ones' first page only): some 0.1 s for 60000
// messages (128 MB) in the page cache. maxBytes bounds the sum of Size of
// the stored messages, bytes (at least MinSpoolBytes, 64 KiB); a file
// holding more than a new, smaller maxBytes is trimmed (oldest first) at
// the next Append. A corrupt or unreadable file, or one in use by another
// process (bbolt locks it; the wait is bounded by a second), is an error
// naming its path.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	return openSpool(dir, maxBytes, false)
}

// openSpool is OpenSpool, with fsync after every commit if fsync (for the
// benchmarks that justify not doing so).
func openSpool(dir string, maxBytes int64, fsync bool) (s *Spool, err error) {
	if maxBytes < MinSpoolBytes {
		return nil, fmt.Errorf("spool: max bytes %d below the minimum %d", maxBytes, MinSpoolBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	path := filepath.Join(dir, SpoolFile)
	// bbolt.Open panics on some damage (a garbage freelist page, say).
	defer func() {
		if err != nil {
			s, err = nil, fmt.Errorf("spool %s: %w", path, err)
		}
	}()
	defer recoverCorrupt(&err)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		NoSync:  !fsync,
		// The hashmap freelist finds the runs of contiguous pages that
		// large values need without scanning every free page.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			err = fmt.Errorf("locked by another process or Spool: %w", err)
		}
		return nil, err
	}
	s = &Spool{path: path, maxBytes: maxBytes, db: db}
	s.st.MaxBytes = maxBytes
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// load creates the buckets of a new file, checks an existing one and
// recovers the counters and the next Seq.
func (s *Spool) load() (err error) {
	defer recoverCorrupt(&err)
	err = s.db.Update(func(tx *bolt.Tx) error {
		msgs, meta := tx.Bucket(bucketMsgs), tx.Bucket(bucketMeta)
		if msgs != nil && meta != nil {
			return nil
		}
		var names []string
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
		if len(names) > 0 {
			return fmt.Errorf("not a spool file (buckets %q)", names)
		}
		if _, err := tx.CreateBucket(bucketMsgs); err != nil {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyNext, seqKey(1))
	})
	if err != nil {
		return err
	}
	var bad [][]byte
	err = s.db.View(func(tx *bolt.Tx) error {
		next := tx.Bucket(bucketMeta).Get(keyNext)
		if len(next) != 8 {
			return fmt.Errorf("corrupt file: next seq of %d bytes", len(next))
		}
		s.next = binary.BigEndian.Uint64(next)
		b := tx.Bucket(bucketMsgs)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 || v == nil {
				bad = append(bad, bytes.Clone(k))
				continue
			}
			s.st.Messages++
			s.st.Bytes += entrySize(v)
			s.next = max(s.next, binary.BigEndian.Uint64(k)+1)
		}
		s.st.Oldest = headTime(b)
		return nil
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		err = s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketMsgs)
			for _, k := range bad {
				if err := deleteEntry(b, k, b.Get(k)); err != nil {
					return err
				}
			}
			s.st.Oldest = headTime(b)
			return nil
		})
		s.st.Corrupt = int64(len(bad))
	}
	return err
}

// recoverCorrupt, deferred, turns a panic (bbolt panics on some damage,
// a page that is not what its parent says, say) into *err. bbolt's View and
// Update roll their transaction back first.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("corrupt file: %v", r)
	}
}

// update runs fn in a write transaction, turning bbolt's panics on a
// damaged file into errors. The caller holds wmu.
func (s *Spool) update(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if err != nil && !errors.Is(err, errNotFound) && !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("spool %s: %w", s.path, err)
		}
	}()
	defer recoverCorrupt(&err)
	return s.closedErr(s.db.Update(fn))
}

// view runs fn in a read transaction, like update.
func (s *Spool) view(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if err != nil && !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("spool %s: %w", s.path, err)
		}
	}()
	defer recoverCorrupt(&err)
	return s.closedErr(s.db.View(fn))
}

func (s *Spool) closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Append stores a message at the tail and returns its Seq once it is in
// the file (written to the OS, not fsynced: it survives the process being
// killed, not a power loss). If the spool would then hold more than its
// byte bound, the oldest messages are deleted first, in the same
// transaction (counted in Stats().Discarded and DiscardedBytes); a single
// message whose Size exceeds the bound is refused with ErrTooLarge
// (counted in Stats().TooLarge). qos must be at most 2, topic at most
// 65535 bytes. Safe for concurrent use; Appends are stored in the order
// they take the spool's write lock.
func (s *Spool) Append(topic string, payload []byte, qos byte, retain bool) (seq uint64, err error) {
	if qos > 2 {
		return 0, fmt.Errorf("spool: invalid QoS %d", qos)
	}
	if len(topic) > maxTopic {
		return 0, fmt.Errorf("spool: topic of %d bytes (at most %d)", len(topic), maxTopic)
	}
	size := Size(topic, len(payload))
	if size > s.maxBytes {
		s.mu.Lock()
		s.st.TooLarge++
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: %d bytes, bound %d", ErrTooLarge, size, s.maxBytes)
	}
	v, crc := encode(topic, payload, qos, retain)

	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return 0, ErrClosed
	}
	seq = s.next
	seal(v, crc, time.Now())
	var (
		discarded, freed int64
		head             time.Time
		refresh          bool // the head changed
	)
	err = s.update(func(tx *bolt.Tx) error {
		discarded, freed, refresh = 0, 0, s.st.Messages == 0
		b := tx.Bucket(bucketMsgs)
		c := b.Cursor()
		// Cursor.Delete then Next can skip a key in bbolt: start from
		// First again after each deletion (cheap: one descent).
		for over := s.st.Bytes + size - s.maxBytes; over > 0; {
			k, old := c.First()
			if k == nil {
				break
			}
			es := entrySize(old)
			if err := deleteEntry(b, k, old); err != nil {
				return err
			}
			discarded++
			freed += es
			over -= es
		}
		if err := b.Put(seqKey(seq), v); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyNext, seqKey(seq+1)); err != nil {
			return err
		}
		if refresh = refresh || discarded > 0; refresh {
			head = headTime(b)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.next = seq + 1
	s.mu.Lock()
	s.st.Messages += 1 - discarded
	s.st.Bytes += size - freed
	s.st.Discarded += discarded
	s.st.DiscardedBytes += freed
	if refresh {
		s.st.Oldest = head
	}
	if s.wait != nil {
		close(s.wait)
		s.wait = nil
	}
	s.mu.Unlock()
	return seq, nil
}

// Peek returns up to n messages with Seq > after, oldest first, with at
// most maxBytes of payload in total, bytes (but at least one message if
// there is any, whatever its size). Peek(0, …) starts at the head. The
// messages stay in the spool until deleted. Undecodable messages met on
// the way are deleted, counted in Stats().Corrupt and skipped.
func (s *Spool) Peek(after uint64, n int, maxBytes int64) ([]Message, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	if n <= 0 || after == math.MaxUint64 {
		return nil, nil
	}
	var (
		out []Message
		bad [][]byte
	)
	err := s.view(func(tx *bolt.Tx) error {
		var total int64
		c := tx.Bucket(bucketMsgs).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < n; k, v = c.Next() {
			m, err := decode(k, v)
			if err != nil {
				bad = append(bad, bytes.Clone(k))
				continue
			}
			if len(out) > 0 && total+int64(len(m.payload)) > maxBytes {
				break
			}
			total += int64(len(m.payload))
			out = append(out, m.message())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		if err := s.dropCorrupt(bad); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// dropCorrupt deletes the undecodable messages keys.
func (s *Spool) dropCorrupt(keys [][]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	var (
		n, freed int64
		head     time.Time
	)
	err := s.update(func(tx *bolt.Tx) error {
		n, freed = 0, 0
		b := tx.Bucket(bucketMsgs)
		for _, k := range keys {
			v := b.Get(k)
			if v == nil && b.Bucket(k) == nil {
				continue // deleted meanwhile
			}
			if err := deleteEntry(b, k, v); err != nil {
				return err
			}
			n++
			freed += entrySize(v)
		}
		head = headTime(b)
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st.Messages -= n
	s.st.Bytes -= freed
	s.st.Corrupt += n
	s.st.Oldest = head
	s.mu.Unlock()
	return nil
}

// Delete removes the message seq (acknowledged upstream); deleting a
// missing seq (deleted before, or discarded by the byte bound) is not an
// error.
func (s *Spool) Delete(seq uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	var (
		size int64
		head time.Time
	)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs)
		k := seqKey(seq)
		v := b.Get(k)
		if v == nil {
			return errNotFound
		}
		size = entrySize(v)
		if err := b.Delete(k); err != nil {
			return err
		}
		head = headTime(b)
		return nil
	})
	if errors.Is(err, errNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st.Messages--
	s.st.Bytes -= size
	s.st.Oldest = head
	s.mu.Unlock()
	return nil
}

// Stats returns the spool's current Messages and Bytes, Discarded and
// DiscardedBytes (by the byte bound), TooLarge, Corrupt and Oldest (the
// Spooled time of the head, zero if empty). It reads only memory.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Wait returns a channel closed at the next Append (or at Close), for a
// forwarder to sleep on. Call it before the Peek that found nothing, so
// that an Append in between is not missed.
func (s *Spool) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wait == nil {
		s.wait = make(chan struct{})
		if s.closed {
			close(s.wait)
		}
	}
	return s.wait
}

// Close closes the file (waiting for the transactions under way) and wakes
// the Wait channels; the spool's methods then return ErrClosed. Closing
// twice is not an error.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.wait != nil {
		close(s.wait)
	}
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("spool %s: %w", s.path, err)
	}
	return nil
}
