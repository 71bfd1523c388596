package bridge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func openTestSpool(t testing.TB, dir string, maxBytes int64) *Spool {
	t.Helper()
	s, err := OpenSpool(dir, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// peekAll returns every message in the spool, in order.
func peekAll(t testing.TB, s *Spool) []Message {
	t.Helper()
	var all []Message
	var after uint64
	for {
		msgs, err := s.Peek(after, 1000, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return all
		}
		all = append(all, msgs...)
		after = msgs[len(msgs)-1].Seq
	}
}

func seqs(msgs []Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func sameMessage(a, b Message) bool {
	return a.Seq == b.Seq && a.Topic == b.Topic && bytes.Equal(a.Payload, b.Payload) &&
		a.QoS == b.QoS && a.Retain == b.Retain && a.Spooled.Equal(b.Spooled)
}

func TestSpoolFIFO(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), 1<<20)
	before := time.Now()
	var want []Message
	var bytesWant int64
	for i := 1; i <= 10; i++ {
		topic := fmt.Sprintf("offload/d%d/stage", i)
		payload := bytes.Repeat([]byte{byte(i)}, 100)
		qos, retain := byte(i%3), i%2 == 0
		seq, err := s.Append(topic, payload, qos, retain)
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("append %d: seq %d", i, seq)
		}
		want = append(want, Message{Seq: seq, Topic: topic, Payload: payload, QoS: qos, Retain: retain})
		bytesWant += Size(topic, len(payload))
	}
	after := time.Now()

	got, err := s.Peek(0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("peek: %d messages, want %d", len(got), len(want))
	}
	for i, m := range got {
		w := want[i]
		if m.Seq != w.Seq || m.Topic != w.Topic || !bytes.Equal(m.Payload, w.Payload) || m.QoS != w.QoS || m.Retain != w.Retain {
			t.Fatalf("message %d: got %+v, want %+v", i, m, w)
		}
		if m.Spooled.Before(before.Truncate(0)) || m.Spooled.After(after) {
			t.Fatalf("message %d spooled %v, not within [%v, %v]", i, m.Spooled, before, after)
		}
	}
	// The payload is a copy: scribbling on it changes nothing stored.
	got[0].Payload[0] = 0xff
	again, _ := s.Peek(0, 1, 1<<20)
	if again[0].Payload[0] != 1 {
		t.Fatal("Peek's payload aliases the stored one")
	}

	st := s.Stats()
	if st.Messages != 10 || st.Bytes != bytesWant || !st.Oldest.Equal(got[0].Spooled) {
		t.Fatalf("stats %+v, want 10 messages, %d bytes, oldest %v", st, bytesWant, got[0].Spooled)
	}

	// n and maxBytes.
	check := func(after uint64, n int, maxBytes int64, want ...uint64) {
		t.Helper()
		msgs, err := s.Peek(after, n, maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(seqs(msgs)) != fmt.Sprint(want) {
			t.Fatalf("Peek(%d, %d, %d) = %v, want %v", after, n, maxBytes, seqs(msgs), want)
		}
	}
	check(0, 3, 1<<20, 1, 2, 3)
	check(3, 3, 1<<20, 4, 5, 6)
	check(0, 100, 250, 1, 2)    // 100-byte payloads: two fit in 250
	check(0, 100, 300, 1, 2, 3) // exactly 300
	check(4, 100, 0, 5)         // at least one
	check(4, 0, 1<<20)          // n = 0: none
	check(10, 100, 1<<20)       // nothing after the tail
	check(1<<64-1, 100, 1<<20)  // nor after the largest seq
	check(7, 100, 1<<20, 8, 9, 10)

	// Delete, in and out of order; missing seqs are no error.
	for _, seq := range []uint64{1, 5, 5, 999, 2} {
		if err := s.Delete(seq); err != nil {
			t.Fatalf("delete %d: %v", seq, err)
		}
	}
	check(0, 100, 1<<20, 3, 4, 6, 7, 8, 9, 10)
	check(3, 2, 1<<20, 4, 6)
	st = s.Stats()
	var sz int64
	for _, seq := range []uint64{3, 4, 6, 7, 8, 9, 10} {
		sz += Size(want[seq-1].Topic, len(want[seq-1].Payload))
	}
	if st.Messages != 7 || st.Bytes != sz {
		t.Fatalf("after deletes: stats %+v, want 7 messages, %d bytes", st, sz)
	}
	if head, _ := s.Peek(0, 1, 0); !st.Oldest.Equal(head[0].Spooled) {
		t.Fatalf("oldest %v, head spooled %v", st.Oldest, head[0].Spooled)
	}
	for _, seq := range []uint64{3, 4, 6, 7, 8, 9, 10} {
		if err := s.Delete(seq); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Messages != 0 || st.Bytes != 0 || !st.Oldest.IsZero() {
		t.Fatalf("emptied: stats %+v", st)
	}
	check(0, 100, 1<<20)
	if seq, err := s.Append("t", nil, 0, false); err != nil || seq != 11 {
		t.Fatalf("append after emptying: seq %d, %v; want 11", seq, err)
	}
	if m, _ := s.Peek(0, 1, 0); len(m) != 1 || m[0].Payload == nil || len(m[0].Payload) != 0 {
		t.Fatalf("empty payload: %+v", m)
	}
}

func TestSpoolInvalidAppend(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), MinSpoolBytes)
	if _, err := s.Append("t", nil, 3, false); err == nil {
		t.Error("QoS 3 accepted")
	}
	if _, err := s.Append(strings.Repeat("t", 1<<16), nil, 0, false); err == nil {
		t.Error("topic of 64 KiB accepted")
	}
	if st := s.Stats(); st.Messages != 0 || st.TooLarge != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSpoolSeqAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Append("t", []byte("x"), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := s.Delete(seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSpool(t, dir, 1<<20)
	if st := s.Stats(); st.Messages != 0 || st.Bytes != 0 {
		t.Fatalf("reopened empty spool: %+v", st)
	}
	seq, err := s.Append("t", []byte("y"), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 6 {
		t.Fatalf("first seq after reopening an emptied spool: %d, want 6", seq)
	}
}

func TestSpoolReopenRecovers(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		p := make([]byte, rng.IntN(20000))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if _, err := s.Append(fmt.Sprintf("sites/s/offload/d%d/stage%d", i%7, i), p, byte(i%3), i%5 == 0); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 300; seq += 3 {
		if err := s.Delete(seq); err != nil {
			t.Fatal(err)
		}
	}
	want, wantMsgs := s.Stats(), peekAll(t, s)
	if want.Discarded == 0 {
		t.Fatal("test meant to discard: enlarge the messages")
	}
	var sum int64
	for _, m := range wantMsgs {
		sum += Size(m.Topic, len(m.Payload))
	}
	if want.Bytes != sum || want.Messages != int64(len(wantMsgs)) {
		t.Fatalf("stats %+v; the messages hold %d, %d bytes", want, len(wantMsgs), sum)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestSpool(t, dir, 2<<20)
	got := s.Stats()
	if got.Messages != want.Messages || got.Bytes != want.Bytes || !got.Oldest.Equal(want.Oldest) ||
		got.Discarded != 0 || got.Corrupt != 0 {
		t.Fatalf("reopened: stats %+v, want %+v (counters reset)", got, want)
	}
	gotMsgs := peekAll(t, s)
	if len(gotMsgs) != len(wantMsgs) {
		t.Fatalf("reopened: %d messages, want %d", len(gotMsgs), len(wantMsgs))
	}
	for i := range gotMsgs {
		if !sameMessage(gotMsgs[i], wantMsgs[i]) {
			t.Fatalf("reopened: message %d differs: seq %d vs %d", i, gotMsgs[i].Seq, wantMsgs[i].Seq)
		}
	}
	if seq, err := s.Append("t", nil, 0, false); err != nil || seq != 301 {
		t.Fatalf("append after reopen: seq %d, %v; want 301", seq, err)
	}
}

func TestSpoolByteBound(t *testing.T) {
	const maxBytes = MinSpoolBytes
	s := openTestSpool(t, t.TempDir(), maxBytes)
	payload := make([]byte, 1000)
	size := Size("t", len(payload)) // 1065
	fit := maxBytes / size          // 61
	for i := 1; i <= 100; i++ {
		payload[0] = byte(i)
		if _, err := s.Append("t", payload, 1, false); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Bytes > maxBytes {
			t.Fatalf("append %d: %d bytes > %d", i, st.Bytes, maxBytes)
		}
	}
	st := s.Stats()
	if st.Messages != fit || st.Bytes != fit*size || st.Discarded != 100-fit || st.DiscardedBytes != (100-fit)*size {
		t.Fatalf("stats %+v; want %d messages, %d bytes, %d discarded, %d discarded bytes",
			st, fit, fit*size, 100-fit, (100-fit)*size)
	}
	msgs := peekAll(t, s)
	if len(msgs) != int(fit) || msgs[0].Seq != uint64(100-fit+1) || msgs[len(msgs)-1].Seq != 100 {
		t.Fatalf("kept seqs %v, want %d..100", seqs(msgs), 100-fit+1)
	}
	if msgs[0].Payload[0] != byte(100-fit+1) {
		t.Fatal("wrong payload at the head")
	}
	if !st.Oldest.Equal(msgs[0].Spooled) {
		t.Fatalf("oldest %v, head spooled %v", st.Oldest, msgs[0].Spooled)
	}

	// One message larger than the spool: refused, counted, nothing lost.
	_, err := s.Append("t", make([]byte, maxBytes-64), 1, false)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized append: %v, want ErrTooLarge", err)
	}
	if st2 := s.Stats(); st2.TooLarge != 1 || st2.Messages != st.Messages || st2.Bytes != st.Bytes || st2.Discarded != st.Discarded {
		t.Fatalf("after an oversized append: %+v, before %+v", st2, st)
	}

	// One message of exactly the bound: every other message goes.
	seq, err := s.Append("t", make([]byte, maxBytes-64-1), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	st2 := s.Stats()
	if st2.Messages != 1 || st2.Bytes != maxBytes || st2.Discarded != st.Discarded+fit || st2.DiscardedBytes != st.DiscardedBytes+fit*size {
		t.Fatalf("after a message of exactly the bound: %+v", st2)
	}
	if m := peekAll(t, s); len(m) != 1 || m[0].Seq != seq {
		t.Fatalf("kept %v, want [%d]", seqs(m), seq)
	}
	// And the next small one pushes it out.
	if _, err := s.Append("t", payload, 1, false); err != nil {
		t.Fatal(err)
	}
	if st3 := s.Stats(); st3.Messages != 1 || st3.Bytes != size || st3.Discarded != st2.Discarded+1 {
		t.Fatalf("after pushing out the big one: %+v", st3)
	}

	// A smaller bound on reopen trims at the next Append.
	dir := t.TempDir()
	big := openTestSpool(t, dir, 1<<20)
	for i := 0; i < 500; i++ {
		if _, err := big.Append("t", payload, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := big.Close(); err != nil {
		t.Fatal(err)
	}
	small := openTestSpool(t, dir, maxBytes)
	if _, err := small.Append("t", payload, 1, false); err != nil {
		t.Fatal(err)
	}
	if st := small.Stats(); st.Messages != fit || st.Bytes != fit*size || st.Discarded != 500+1-fit {
		t.Fatalf("reopened smaller: %+v", st)
	}
}

func TestSpoolWaitAndClose(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), MinSpoolBytes)
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Wait()
	if s.Wait() != ch {
		t.Fatal("two Waits before an Append return different channels")
	}
	select {
	case <-ch:
		t.Fatal("Wait's channel closed before any Append")
	default:
	}
	if _, err := s.Append("t", nil, 0, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Wait's channel not closed by Append")
	}
	ch = s.Wait()
	if err := s.Delete(1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("Wait's channel closed by Delete")
	default:
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Wait's channel not closed by Close")
	}
	<-s.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Append("t", nil, 0, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := s.Peek(0, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close: %v", err)
	}
	if err := s.Delete(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close: %v", err)
	}
}

func TestSpoolOpenErrors(t *testing.T) {
	if _, err := OpenSpool(t.TempDir(), MinSpoolBytes-1); err == nil {
		t.Error("a bound below MinSpoolBytes accepted")
	}

	// The directory is created 0700.
	dir := filepath.Join(t.TempDir(), "a", "spool")
	s := openTestSpool(t, dir, MinSpoolBytes)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool dir: %v, %v", fi.Mode(), err)
	}
	// In use: an error naming the file, not a hang.
	start := time.Now()
	_, err := OpenSpool(dir, MinSpoolBytes)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, SpoolFile)) {
		t.Errorf("second open of a spool in use: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second open took %v", d)
	}
	_ = s.Close()

	// Garbage.
	for name, content := range map[string][]byte{
		"garbage": bytes.Repeat([]byte("not a bbolt file. "), 1000),
		"short":   []byte("x"),
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, SpoolFile)
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := OpenSpool(dir, MinSpoolBytes); err == nil {
			_ = s.Close()
			t.Errorf("%s file opened", name)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s file: error %q does not name %s", name, err, path)
		}
	}

	// Another bbolt file.
	dir = t.TempDir()
	path := filepath.Join(dir, SpoolFile)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if s, err := OpenSpool(dir, MinSpoolBytes); err == nil {
		_ = s.Close()
		t.Error("a foreign bbolt file opened")
	} else if !strings.Contains(err.Error(), path) {
		t.Errorf("foreign file: error %q does not name %s", err, path)
	}

	// A damaged page (a message's leaf page zeroed) fails the check.
	dir = t.TempDir()
	s = openTestSpool(t, dir, 1<<20)
	for i := 0; i < 200; i++ {
		if _, err := s.Append("t", make([]byte, 100), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	path = filepath.Join(dir, SpoolFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	damaged := false
	for off := 2 * pageSize; off+pageSize <= len(raw); off += pageSize {
		// bbolt page header: id (8), flags (2), count (2), overflow (4);
		// flags 0x02 is a leaf page. Damage the one holding many messages.
		if raw[off+8] == 0x02 && int(raw[off+10])|int(raw[off+11])<<8 > 10 {
			clear(raw[off : off+pageSize])
			damaged = true
			break
		}
	}
	if !damaged {
		t.Fatal("no leaf page found to damage")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenSpool(dir, 1<<20); err == nil {
		_ = s.Close()
		t.Error("a damaged file opened")
	} else if !strings.Contains(err.Error(), path) {
		t.Errorf("damaged file: error %q does not name %s", err, path)
	} else {
		t.Logf("damaged file: %v", err)
	}
	// The failed open let go of the file (its lock).
	if _, err := OpenSpool(dir, 1<<20); err == nil || errors.Is(err, berrors.ErrTimeout) {
		t.Errorf("second open of the damaged file: %v", err)
	}
}

func TestSpoolCorruptMessage(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := s.Append("t", []byte(fmt.Sprint("payload ", i)), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()

	// Damage message 2 (one payload bit: the checksum catches it) and
	// replace message 4 by a short value; add a key that is no seq.
	db, err := bolt.Open(filepath.Join(dir, SpoolFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var size2 int64
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs)
		v := bytes.Clone(b.Get(seqKey(2)))
		size2 = entrySize(v)
		v[len(v)-1] ^= 1
		if err := b.Put(seqKey(2), v); err != nil {
			return err
		}
		if err := b.Put(seqKey(4), []byte{1, 2, 3}); err != nil {
			return err
		}
		return b.Put([]byte("junk"), []byte("value"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	s = openTestSpool(t, dir, 1<<20)
	st := s.Stats()
	good := Size("t", len("payload 1"))
	// The junk key is dropped at open; messages 2 and 4 count until read.
	if st.Messages != 5 || st.Bytes != 3*good+size2+64 || st.Corrupt != 1 {
		t.Fatalf("reopened: %+v", st)
	}
	msgs, err := s.Peek(0, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs(msgs)) != "[1 3 5]" {
		t.Fatalf("peek: %v, want [1 3 5]", seqs(msgs))
	}
	if st := s.Stats(); st.Messages != 3 || st.Bytes != 3*good || st.Corrupt != 3 {
		t.Fatalf("after peek: %+v", st)
	}
	// n counts good messages only.
	if err := s.Delete(1); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := s.Peek(0, 2, 1<<20); fmt.Sprint(seqs(msgs)) != "[3 5]" {
		t.Fatalf("peek: %v, want [3 5]", seqs(msgs))
	}
}

// The kill -9 test: a child process (this test binary, running
// TestHelperSpoolWriter) appends as fast as it can and prints "appended i"
// after each Append returns; the parent SIGKILLs it after K lines, reopens
// the spool and wants every message the child was told was appended.

const (
	spoolHelperEnv   = "SPLITPOINT_SPOOL_KILL_DIR"
	spoolHelperRound = "SPLITPOINT_SPOOL_KILL_ROUND"
	killSpoolBytes   = 1 << 30
	killTopicPrefix  = "kill/"
)

func killTopic(round, i int) string { return fmt.Sprintf("%s%d/%d", killTopicPrefix, round, i) }

// killPayload is message i of a round: mostly 100 B–2 KiB, every 97th
// 64–320 KiB (so that the file grows and remaps while the child runs).
func killPayload(round, i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(round), uint64(i)))
	n := 100 + rng.IntN(2000)
	if i%97 == 0 {
		n = 64<<10 + rng.IntN(256<<10)
	}
	p := make([]byte, n)
	for j := 0; j < n; j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && j+k < n; k++ {
			p[j+k] = byte(v >> (8 * k))
		}
	}
	return p
}

func TestHelperSpoolWriter(t *testing.T) {
	dir := os.Getenv(spoolHelperEnv)
	if dir == "" {
		t.Skip("the child of TestSpoolKill9")
	}
	round, _ := strconv.Atoi(os.Getenv(spoolHelperRound))
	s, err := OpenSpool(dir, killSpoolBytes)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 1; i <= 1_000_000; i++ {
		if _, err := s.Append(killTopic(round, i), killPayload(round, i), 1, i%3 == 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("appended %d\n", i)
	}
	// Block until killed, or until the parent goes (stdin closes).
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(3)
}

func TestSpoolKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	var lastSeq uint64
	for round, k := range []int{1, 150, 900, 2500, 4000} {
		// Run the child until it has printed k lines, then SIGKILL it.
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSpoolWriter$")
		cmd.Env = append(os.Environ(), spoolHelperEnv+"="+dir, spoolHelperRound+"="+strconv.Itoa(round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		printed := 0
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n, ok := strings.CutPrefix(sc.Text(), "appended ")
			if !ok {
				continue
			}
			i, err := strconv.Atoi(n)
			if err != nil || i != printed+1 {
				t.Fatalf("round %d: child printed %q after %d", round, sc.Text(), printed)
			}
			printed = i
			if printed == k {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		// Lines the child printed before it died count too.
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "appended "); ok {
				if i, err := strconv.Atoi(n); err == nil && i == printed+1 {
					printed = i
				}
			}
		}
		_ = stdin.Close()
		err = cmd.Wait()
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child did not die of SIGKILL after %d lines (%v): %s", round, printed, err, stderr.String())
		}
		if printed < k {
			t.Fatalf("round %d: child printed %d lines, want %d: %s", round, printed, k, stderr.String())
		}

		// Every message whose Append returned is there, in order, intact;
		// so is anything after it that made it into the file.
		s, err := OpenSpool(dir, killSpoolBytes)
		if err != nil {
			t.Fatalf("round %d: reopening after kill -9: %v", round, err)
		}
		msgs := peekAll(t, s)
		st := s.Stats()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if st.Corrupt != 0 {
			t.Fatalf("round %d: %d corrupt messages", round, st.Corrupt)
		}
		if st.Messages != int64(len(msgs)) {
			t.Fatalf("round %d: stats count %d, peeked %d", round, st.Messages, len(msgs))
		}
		found := 0
		for _, m := range msgs {
			if m.Seq <= lastSeq {
				continue // an earlier round's (checked then)
			}
			i := found + 1
			if m.Topic != killTopic(round, i) || !bytes.Equal(m.Payload, killPayload(round, i)) ||
				m.QoS != 1 || m.Retain != (i%3 == 0) {
				t.Fatalf("round %d: message seq %d is %q (%d bytes), want %q", round, m.Seq, m.Topic, len(m.Payload), killTopic(round, i))
			}
			found = i
			lastSeq = m.Seq
		}
		if found < printed {
			t.Fatalf("round %d: the child appended %d messages, the spool holds %d of them", round, printed, found)
		}
		t.Logf("round %d: killed after %d printed, %d in the spool (%d in all, %d bytes)", round, printed, found, st.Messages, st.Bytes)
	}
}

func TestSpoolConcurrent(t *testing.T) {
	const writers, per = 8, 250
	s := openTestSpool(t, t.TempDir(), 64<<20)
	done := make(chan struct{})
	var wg sync.WaitGroup

	// Writers: writer w's message i carries (w, i).
	appended := make([][]uint64, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= per; i++ {
				p := fmt.Appendf(make([]byte, 0, 600), "%d %d ", w, i)
				p = append(p, make([]byte, (w*31+i*17)%500)...)
				seq, err := s.Append(fmt.Sprintf("w/%d", w), p, 1, false)
				if err != nil {
					t.Error(err)
					return
				}
				appended[w] = append(appended[w], seq)
			}
		}()
	}
	// Stats readers.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			st := s.Stats()
			if st.Messages < 0 || st.Bytes < 0 || st.Bytes > st.MaxBytes {
				t.Errorf("stats %+v", st)
				return
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()

	// The forwarder: Peek in order, Delete as "acknowledged", sleep on Wait.
	next := make([]int, writers)
	var got []uint64
	var after uint64
	deadline := time.After(60 * time.Second)
	for len(got) < writers*per {
		ch := s.Wait()
		msgs, err := s.Peek(after, 17, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			select {
			case <-ch:
			case <-deadline:
				t.Fatalf("forwarder got %d of %d messages", len(got), writers*per)
			}
			continue
		}
		for _, m := range msgs {
			if m.Seq <= after {
				t.Fatalf("seq %d after %d", m.Seq, after)
			}
			var w, i int
			if _, err := fmt.Sscanf(string(m.Payload), "%d %d ", &w, &i); err != nil || m.Topic != fmt.Sprintf("w/%d", w) {
				t.Fatalf("message %d: %q: %v", m.Seq, m.Topic, err)
			}
			if i != next[w]+1 {
				t.Fatalf("writer %d: message %d after %d", w, i, next[w])
			}
			next[w] = i
			after = m.Seq
			got = append(got, m.Seq)
			if err := s.Delete(m.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	wg.Wait()
	var all []uint64
	for _, a := range appended {
		all = append(all, a...)
	}
	if len(all) != len(got) {
		t.Fatalf("appended %d, forwarded %d", len(all), len(got))
	}
	seen := make(map[uint64]bool, len(got))
	for _, seq := range got {
		seen[seq] = true
	}
	for _, seq := range all {
		if !seen[seq] {
			t.Fatalf("seq %d appended, never forwarded", seq)
		}
	}
	if st := s.Stats(); st.Messages != 0 || st.Bytes != 0 || st.Discarded != 0 || !st.Oldest.IsZero() {
		t.Fatalf("drained: %+v", st)
	}
}

// Concurrent Appends against the byte bound: the counts add up.
func TestSpoolConcurrentBound(t *testing.T) {
	const writers, per = 4, 300
	s := openTestSpool(t, t.TempDir(), MinSpoolBytes)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := s.Append("t", make([]byte, 100+(w*i)%3000), 1, false); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	msgs := peekAll(t, s)
	var sum int64
	for _, m := range msgs {
		sum += Size(m.Topic, len(m.Payload))
	}
	if st.Messages+st.Discarded != writers*per || st.Messages != int64(len(msgs)) || st.Bytes != sum || st.Bytes > MinSpoolBytes {
		t.Fatalf("stats %+v; %d messages of %d bytes in the spool", st, len(msgs), sum)
	}
}

func BenchmarkSpoolAppend(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload int
		sync    bool
	}{
		{"1KiB", 1 << 10, false},
		{"600KiB", 600 << 10, false},
		{"1KiB/fsync", 1 << 10, true},
		{"600KiB/fsync", 600 << 10, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := openSpool(b.TempDir(), 64<<20, bc.sync)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			payload := make([]byte, bc.payload)
			b.SetBytes(int64(bc.payload))
			w0 := writtenBytes()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Append("sites/s1/offload/d1/stage", payload, 1, false); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(s.Stats().Discarded)/float64(b.N), "discards/op")
			if w0 >= 0 {
				// bbolt copies on write: what a commit writes, over the payload.
				b.ReportMetric(float64(writtenBytes()-w0)/float64(b.N)/float64(bc.payload), "written/payload")
			}
		})
	}
}

// writtenBytes is what this process passed to write(2) and friends so far
// (Linux's /proc/self/io wchar), -1 if unknown.
func writtenBytes() int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
