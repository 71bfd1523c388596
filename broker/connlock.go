package broker

import (
	"bytes"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// connectStripes is the number of locks that serialise session set-up; a
// client id hashes to one of them. A fixed number bounds the memory
// whatever the number of client ids.
const connectStripes = 256

// connectLockWait bounds how long a connection waits for another one's
// session set-up with the same stripe (a set-up that failed half way and
// never released it).
const connectLockWait = 5 * time.Second

// connectLock serialises the session set-up of connections with the same
// client id. mochi sets up a session in three steps on each connection's
// own goroutine — look up the client id's existing client and disconnect it
// (the takeover), then add the new client — with nothing held in between.
// Two connections with one id that arrive together (two processes
// reconnecting after kicking each other off) can both look up the same old
// client before either adds itself: the second Add then replaces the first
// in the client list, and the first stays connected as a ghost that nothing
// disconnects and to which nothing is delivered. This hook holds a lock
// from OnSessionEstablish (before the look-up) to OnSessionEstablished
// (after the add), so the second connection sees the first and takes it
// over as MQTT says.
type connectLock struct {
	mqtt.HookBase
	log     *slog.Logger
	stripes [connectStripes]stripe
}

type stripe struct {
	sem    chan struct{} // capacity 1: the lock
	mu     sync.Mutex
	holder *mqtt.Client
}

func newConnectLock(log *slog.Logger) *connectLock {
	h := &connectLock{log: log}
	for i := range h.stripes {
		h.stripes[i].sem = make(chan struct{}, 1)
	}
	return h
}

func (h *connectLock) ID() string { return "splitpoint-connect-lock" }

func (h *connectLock) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect}, []byte{b})
}

func (h *connectLock) stripe(id string) *stripe {
	f := fnv.New32a()
	_, _ = f.Write([]byte(id))
	return &h.stripes[f.Sum32()%connectStripes]
}

// OnSessionEstablish takes the client id's lock before mochi looks for an
// existing session. mochi gives up on a connection without calling any
// later hook when its CONNACK or its resent messages cannot be written, so
// a holder can vanish: a lock whose holder's connection is closed is taken
// over at once, and one held longer than connectLockWait is taken over
// too (with a warning), never left behind.
func (h *connectLock) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	s := h.stripe(cl.ID)
	deadline := time.NewTimer(connectLockWait)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case s.sem <- struct{}{}:
			s.mu.Lock()
			s.holder = cl
			s.mu.Unlock()
			return
		case <-poll.C:
			s.mu.Lock()
			stale := s.holder != nil && s.holder.Closed()
			if stale {
				s.holder = cl // the lock passes to us, still taken
			}
			s.mu.Unlock()
			if stale {
				return
			}
		case <-deadline.C:
			h.log.Warn("session set-up lock held too long; taking it over", "client", cl.ID, "waited", connectLockWait)
			s.mu.Lock()
			if s.holder == nil { // released meanwhile: take it properly
				s.mu.Unlock()
				s.sem <- struct{}{}
				s.mu.Lock()
			}
			s.holder = cl
			s.mu.Unlock()
			return
		}
	}
}

// OnSessionEstablished releases the lock once the client is in mochi's
// client list.
func (h *connectLock) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.release(cl) }

// OnDisconnect releases the lock of a connection that ended during set-up.
func (h *connectLock) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.release(cl) }

func (h *connectLock) release(cl *mqtt.Client) {
	s := h.stripe(cl.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holder != cl {
		return
	}
	s.holder = nil
	<-s.sem
}
