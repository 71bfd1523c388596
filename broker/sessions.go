package broker

import (
	"cmp"
	"container/list"
	"encoding/json"
	"errors"
	"github.com/splitpoint/splitpoint/wire"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// Defaults of Limits, sized for a Raspberry Pi with 1 GB of RAM: a stale
// subscriber holds at most 32 MiB (about 58 raw 562 KB frames, or 1000
// small messages), all of them together at most 128 MiB, and a session
// that has been gone for an hour is deleted with its subscriptions.
const (
	DefaultSessionExpiry      = time.Hour
	DefaultMaxQueuedMessages  = 1000
	DefaultMaxQueuedBytes     = 32 << 20
	DefaultMaxQueuedBytesAll  = 128 << 20
	DefaultMaxOfflineSessions = 256
)

// MaxQueuedMessagesLimit is the largest MaxMessages: mochi's per-client
// store (MaximumInflight, a uint16) must stay above it.
const MaxQueuedMessagesLimit = 65000

// minInflight is the floor of mochi's MaximumInflight, its default. It
// caps the unacknowledged messages of every client, online ones too (mochi
// refuses a message past it), so it stays far above what an online
// consumer holds: a device's window (8) times the devices of a gateway.
const minInflight = 8192

// MessageOverhead is what the broker keeps per queued message beyond its
// topic and payload: mochi's packet struct (800 bytes) and the map and
// list entries. It counts into queued bytes so that the byte caps bound
// floods of small messages too.
const MessageOverhead = 1024

// QueuedSize is what one queued message counts for in queued bytes.
func QueuedSize(topic string, payload int) int64 {
	return int64(len(topic) + payload + MessageOverhead)
}

// SysSessionsTopic is where the broker publishes its SessionStats, as
// retained JSON, every second in which they changed.
const SysSessionsTopic = wire.SysSessionsTopic

// largestSessions is how many offline sessions SessionStats details.
const largestSessions = 10

// Limits bound what the broker keeps for clients that went away with a
// persistent session (MQTT 3.1.1 clean session false, or an MQTT 5 session
// expiry). Zero fields take the defaults above.
type Limits struct {
	// Expiry: a session offline this long is deleted, with its
	// subscriptions and queued messages. Whole seconds.
	Expiry time.Duration
	// MaxMessages: messages kept per offline session; the oldest go first.
	MaxMessages int
	// MaxBytes: queued bytes (QueuedSize) kept per offline session; the
	// oldest go first.
	MaxBytes int64
	// MaxBytesTotal: queued bytes kept over all offline sessions; the
	// oldest message of any offline session goes first.
	MaxBytesTotal int64
	// MaxOfflineSessions: offline sessions kept; when one more client goes
	// away, the session offline the longest is deleted as if it expired.
	MaxOfflineSessions int
}

func (l Limits) withDefaults() (Limits, error) {
	if l.Expiry < 0 || l.MaxMessages < 0 || l.MaxBytes < 0 || l.MaxBytesTotal < 0 || l.MaxOfflineSessions < 0 {
		return l, errors.New("session limits must not be negative")
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	e := int64(l.Expiry)
	def(&e, int64(DefaultSessionExpiry))
	l.Expiry = time.Duration(e)
	def(&l.MaxBytes, DefaultMaxQueuedBytes)
	def(&l.MaxBytesTotal, DefaultMaxQueuedBytesAll)
	if l.MaxMessages == 0 {
		l.MaxMessages = DefaultMaxQueuedMessages
	}
	if l.MaxOfflineSessions == 0 {
		l.MaxOfflineSessions = DefaultMaxOfflineSessions
	}
	switch {
	case l.Expiry < time.Second || l.Expiry%time.Second != 0 || l.Expiry/time.Second > 1<<32-1:
		return l, errors.New("session expiry must be whole seconds, at least 1s")
	case l.MaxMessages > MaxQueuedMessagesLimit:
		return l, errors.New("max queued messages must be at most 65000")
	}
	return l, nil
}

// Discards counts messages the broker discarded from offline sessions,
// by the limit that discarded them.
type Discards struct {
	CountCap   int64 `json:"count_cap"`   // Limits.MaxMessages
	ByteCap    int64 `json:"byte_cap"`    // Limits.MaxBytes
	TotalCap   int64 `json:"total_cap"`   // Limits.MaxBytesTotal
	Expired    int64 `json:"expired"`     // Limits.Expiry
	SessionCap int64 `json:"session_cap"` // Limits.MaxOfflineSessions
}

// Total is the sum over all reasons.
func (d Discards) Total() int64 {
	return d.CountCap + d.ByteCap + d.TotalCap + d.Expired + d.SessionCap
}

type reason int

const (
	byCount reason = iota
	byBytes
	byTotal
	byExpiry
	bySessionCap
)

var reasonNames = [...]string{"max_queued_messages", "max_queued_bytes", "max_queued_bytes_total", "session_expiry", "max_offline_sessions"}

func (d *Discards) add(r reason) {
	switch r {
	case byCount:
		d.CountCap++
	case byBytes:
		d.ByteCap++
	case byTotal:
		d.TotalCap++
	case byExpiry:
		d.Expired++
	case bySessionCap:
		d.SessionCap++
	}
}

// SessionInfo describes one client's session.
type SessionInfo struct {
	Client string `json:"client"`
	Online bool   `json:"online"`
	// OfflineSince is when the client went away (zero while online).
	OfflineSince time.Time `json:"offline_since,omitzero"`
	// Queued messages: for an offline session what the broker keeps for
	// it; for an online one what it sent and the client has not
	// acknowledged yet.
	QueuedMessages int   `json:"queued_messages"`
	QueuedBytes    int64 `json:"queued_bytes"`
	// Discarded from this session since it started (a clean start resets
	// them). Expired and SessionCap stay 0: those end the session.
	Discarded      Discards `json:"discarded"`
	DiscardedBytes int64    `json:"discarded_bytes"`
}

// SessionStats are the broker's counters about what it keeps for clients.
type SessionStats struct {
	// Now, over all offline sessions.
	OfflineSessions int   `json:"offline_sessions"`
	QueuedMessages  int   `json:"queued_messages"`
	QueuedBytes     int64 `json:"queued_bytes"`
	// Since the broker started.
	Discarded       Discards `json:"discarded"`
	DiscardedBytes  int64    `json:"discarded_bytes"`
	SessionsExpired int64    `json:"sessions_expired"` // by Limits.Expiry
	SessionsEvicted int64    `json:"sessions_evicted"` // by Limits.MaxOfflineSessions
	// Takeovers counts connections closed because another connection
	// took over their client id.
	Takeovers int64 `json:"takeovers"`
	// Largest are the offline sessions holding the most bytes (at most
	// 10), largest first.
	Largest []SessionInfo `json:"largest"`
}

// entry is one message the broker holds for a client, unacknowledged.
type entry struct {
	id      uint16 // mochi's packet id, the key of the client's Inflight
	size    int64  // QueuedSize
	created int64  // the packet's Created, to tell a resend from a reused id
	seq     uint64 // order of arrival over all sessions
}

// session mirrors the outgoing QoS 1/2 messages mochi holds for one client
// id in its Inflight store, in order of arrival. Bound: mochi holds at most
// MaximumInflight messages per client, and this hook keeps an offline
// session at Limits.MaxMessages.
type session struct {
	id      string
	cl      *mqtt.Client // the client object whose Inflight holds the messages
	offline bool
	since   time.Time
	q       *list.List               // *entry, oldest first
	byID    map[uint16]*list.Element // the elements of q by packet id
	bytes   int64
	disc    Discards
	discB   int64
}

// sessionHook bounds what mochi keeps for offline sessions and counts what
// it discards, ends expired sessions properly, counts takeovers, and
// rate-limits the logging of drops and takeovers.
//
// mochi keeps the messages of a persistent session whose client went away
// in that client's Inflight store, bounded only by MaximumInflight (a count
// shared with online clients, which refuses the newest message). The hook
// follows every message mochi stores (OnQosPublish) and releases
// (OnQosComplete, OnQosDropped), and evicts the oldest from the store of an
// offline session past Limits. On OnClientExpired it unsubscribes the
// client, which mochi does not: otherwise a later client with that id
// inherits the stale subscriptions.
type sessionHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	lim       Limits
	log       *slog.Logger
	drops     *limiter // by kind of drop
	takeovers *limiter // by client id
	now       func() time.Time

	mu sync.Mutex
	// sessions: one per client id that has unacknowledged messages or an
	// offline persistent session. Bound: the clients connected plus at most
	// Limits.MaxOfflineSessions offline ones (enforced when a client goes
	// away).
	sessions map[string]*session
	offline  map[string]*session // the offline ones among sessions
	offMsgs  int
	offBytes int64
	seq      uint64
	disc     Discards
	discB    int64
	expired  int64
	evicted  int64
	taken    int64

	sysMu   sync.Mutex
	lastSys string // the last stats published on SysSessionsTopic
}

func newSessionHook(srv *mqtt.Server, lim Limits, log *slog.Logger) *sessionHook {
	return &sessionHook{
		srv: srv, lim: lim, log: log, now: time.Now,
		drops:     newLimiter(dropLogEvery),
		takeovers: newLimiter(takeoverLogEvery),
		sessions:  map[string]*session{},
		offline:   map[string]*session{},
	}
}

func (h *sessionHook) ID() string { return "splitpoint-sessions" }

func (h *sessionHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnPublishDropped,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired, mqtt.OnSysInfoTick:
		return true
	}
	return false
}

// persistent reports whether the client's session outlives its connection
// (mochi's own test in attachClient, negated).
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// --- state helpers; h.mu held ---

func (h *sessionHook) get(cl *mqtt.Client) *session {
	s := h.sessions[cl.ID]
	if s == nil {
		s = &session{id: cl.ID, cl: cl, q: list.New(), byID: map[uint16]*list.Element{}}
		h.sessions[cl.ID] = s
	}
	return s
}

func (h *sessionHook) setOffline(s *session, off bool) {
	if s.offline == off {
		return
	}
	s.offline = off
	if off {
		h.offline[s.id] = s
		h.offMsgs += s.q.Len()
		h.offBytes += s.bytes
		s.since = h.now()
		return
	}
	delete(h.offline, s.id)
	h.offMsgs -= s.q.Len()
	h.offBytes -= s.bytes
	s.since = time.Time{}
}

func (h *sessionHook) push(s *session, e *entry) {
	s.byID[e.id] = s.q.PushBack(e)
	s.bytes += e.size
	if s.offline {
		h.offMsgs++
		h.offBytes += e.size
	}
}

func (h *sessionHook) remove(s *session, el *list.Element) *entry {
	e := s.q.Remove(el).(*entry)
	delete(s.byID, e.id)
	s.bytes -= e.size
	if s.offline {
		h.offMsgs--
		h.offBytes -= e.size
	}
	return e
}

// held reports whether mochi still holds e for cl.
func held(cl *mqtt.Client, e *entry) bool {
	pk, ok := cl.State.Inflight.Get(e.id)
	return ok && pk.FixedHeader.Type == packets.Publish && pk.Created == e.created
}

// reconcile forgets the entries mochi no longer holds for s.cl: mochi
// deletes a few without telling hooks (a message rolled back because the
// client's write queue was full).
func (h *sessionHook) reconcile(s *session) {
	for el := s.q.Front(); el != nil; {
		next := el.Next()
		if !held(s.cl, el.Value.(*entry)) {
			h.remove(s, el)
		}
		el = next
	}
}

// evict discards the message el from mochi's store and counts it.
func (h *sessionHook) evict(s *session, el *list.Element, r reason) {
	e := h.remove(s, el)
	if !held(s.cl, e) || !s.cl.State.Inflight.Delete(e.id) {
		return // mochi had already dropped it
	}
	atomic.AddInt64(&h.srv.Info.Inflight, -1)
	s.cl.State.Inflight.IncreaseSendQuota()
	s.disc.add(r)
	s.discB += e.size
	h.disc.add(r)
	h.discB += e.size
	if ok, n := h.drops.allow(reasonNames[r]); ok {
		h.log.Warn("broker discarded a message queued for an offline session", "client", s.id, "limit", reasonNames[r],
			"queued_messages", s.q.Len(), "queued_bytes", s.bytes, "not_logged", n)
	}
}

// enforce applies the per-session and total caps to an offline session.
func (h *sessionHook) enforce(s *session) {
	if !s.offline {
		return
	}
	for s.q.Len() > h.lim.MaxMessages {
		h.evict(s, s.q.Front(), byCount)
	}
	for s.bytes > h.lim.MaxBytes && s.q.Len() > 0 {
		h.evict(s, s.q.Front(), byBytes)
	}
	for h.offBytes > h.lim.MaxBytesTotal {
		var victim *session
		for _, o := range h.offline {
			if o.q.Len() > 0 && (victim == nil || o.q.Front().Value.(*entry).seq < victim.q.Front().Value.(*entry).seq) {
				victim = o
			}
		}
		if victim == nil {
			return
		}
		h.evict(victim, victim.q.Front(), byTotal)
	}
}

// end forgets s after discarding all its messages for r.
func (h *sessionHook) end(s *session, r reason) {
	for s.q.Len() > 0 {
		h.evict(s, s.q.Front(), r)
	}
	h.setOffline(s, false)
	delete(h.sessions, s.id)
}

// --- hooks ---

// OnQosPublish: mochi stored pk for cl (a new message, or a resend of a
// stored one when the client reconnects).
func (h *sessionHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish || cl.IsTakenOver() {
		return
	}
	size := QueuedSize(pk.TopicName, len(pk.Payload))
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.get(cl)
	s.cl = cl
	h.setOffline(s, cl.Closed() && persistent(cl))
	if el := s.byID[pk.PacketID]; el != nil {
		if e := el.Value.(*entry); e.created == pk.Created && e.size == size {
			return // a resend: it keeps its place
		}
		h.remove(s, el) // mochi reused the id of a message it dropped silently
	}
	h.seq++
	h.push(s, &entry{id: pk.PacketID, size: size, created: pk.Created, seq: h.seq})
	h.enforce(s)
}

// OnQosComplete: the client acknowledged a message (or mochi finished an
// inbound flow with this packet id, which also deletes it from the store).
func (h *sessionHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.sessions[cl.ID]; s != nil {
		if el := s.byID[pk.PacketID]; el != nil {
			h.remove(s, el)
		}
	}
}

// OnQosDropped: mochi dropped a stored message: a clean session ended, or
// a message expired. A session taken over hands its messages to the new
// connection (inheritClientSession copies the store, then empties the old
// one with ClearInflights, which calls this hook for each): nothing is lost
// then, but mochi decrements Info.Inflight for messages the new connection
// still holds, and again when they are acknowledged; the hook undoes the
// first decrement so that $SYS/broker/messages/inflight stays right.
func (h *sessionHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	if cl.IsTakenOver() {
		atomic.AddInt64(&h.srv.Info.Inflight, 1)
		return
	}
	h.mu.Lock()
	if s := h.sessions[cl.ID]; s != nil {
		if el := s.byID[pk.PacketID]; el != nil {
			h.remove(s, el)
		}
	}
	h.mu.Unlock()
	if pk.FixedHeader.Type == packets.Publish {
		h.logDrop("unacknowledged", "broker dropped an unacknowledged message", cl.ID, pk.TopicName)
	}
}

// OnPublishDropped: the client's write queue was full (mochi counts these
// in Info.MessagesDropped).
func (h *sessionHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	h.logDrop("queue_full", "broker dropped a message: client's queue is full", cl.ID, pk.TopicName)
}

func (h *sessionHook) logDrop(kind, msg, client, topic string) {
	if ok, n := h.drops.allow(kind); ok {
		h.log.Warn(msg, "client", client, "topic", topic, "not_logged", n)
	}
}

// OnSessionEstablished: a client connected (after mochi moved a resumed
// session's messages to it and resent them).
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[cl.ID]
	if s == nil {
		return
	}
	s.cl = cl
	h.setOffline(s, false)
	h.reconcile(s) // a clean start, or an expired session: mochi holds none of the old ones
	if pk.Connect.Clean {
		s.disc, s.discB = Discards{}, 0
	}
}

// OnDisconnect: a connection ended. mochi calls it once per connection,
// also for the one a takeover closed.
func (h *sessionHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline {
		return
	}
	takenOver := errors.Is(cl.StopCause(), packets.ErrSessionTakenOver)
	if takenOver {
		h.tookOver(cl)
	}
	// mochi marks the old client taken over only after it has stopped it,
	// so its OnDisconnect may run before IsTakenOver is true: the stop
	// cause says it at once.
	if takenOver || cl.IsTakenOver() {
		return // the new connection has the session
	}
	var ended []*mqtt.Client
	h.mu.Lock()
	s := h.sessions[cl.ID]
	switch {
	case s != nil && s.cl != cl && !s.cl.Closed():
		// A newer connection owns the client id.
	case expire:
		if s != nil { // mochi drops its messages (OnQosDropped) and the client
			h.setOffline(s, false)
			delete(h.sessions, s.id)
		}
	default:
		s = h.get(cl)
		s.cl = cl
		h.setOffline(s, true)
		h.reconcile(s)
		h.enforce(s)
		for len(h.offline) > h.lim.MaxOfflineSessions {
			var oldest *session
			for _, o := range h.offline {
				if oldest == nil || o.since.Before(oldest.since) {
					oldest = o
				}
			}
			ended = append(ended, oldest.cl)
			h.end(oldest, bySessionCap)
			h.evicted++
			h.log.Info("broker deleted the session offline the longest: too many offline sessions", "client", oldest.id,
				"max_offline_sessions", h.lim.MaxOfflineSessions, "offline_since", oldest.since)
		}
	}
	h.mu.Unlock()
	for _, c := range ended {
		if cur, ok := h.srv.Clients.Get(c.ID); ok && cur == c && c.Closed() { // not reconnected meanwhile
			h.deleteClient(c)
			h.srv.Clients.Delete(c.ID)
		}
	}
}

// OnClientExpired: mochi deletes the client after this hook, but keeps its
// subscriptions in the topic index and its messages counted in Inflight.
func (h *sessionHook) OnClientExpired(cl *mqtt.Client) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	if s := h.sessions[cl.ID]; s != nil && s.cl == cl {
		h.end(s, byExpiry)
	}
	h.expired++
	h.mu.Unlock()
	if !cl.IsTakenOver() {
		h.deleteClient(cl)
	}
}

// deleteClient removes an ended session's subscriptions (also from the
// topic index) and its stored messages, without calling OnQosDropped.
func (h *sessionHook) deleteClient(cl *mqtt.Client) {
	h.srv.UnsubscribeClient(cl)
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if cl.State.Inflight.Delete(pk.PacketID) {
			atomic.AddInt64(&h.srv.Info.Inflight, -1)
		}
	}
}

func (h *sessionHook) tookOver(cl *mqtt.Client) {
	h.mu.Lock()
	h.taken++
	total := h.taken
	h.mu.Unlock()
	ok, n := h.takeovers.allow(cl.ID)
	if !ok {
		return
	}
	newRemote := ""
	if cur, found := h.srv.Clients.Get(cl.ID); found && cur != cl {
		newRemote = cur.Net.Remote
	}
	args := []any{"client", cl.ID, "old_remote", cl.Net.Remote, "new_remote", newRemote, "takeovers", total}
	if n == 0 {
		h.log.Info("client id taken over by a new connection; the old one is closed", args...)
		return
	}
	h.log.Warn("client id taken over again: two clients may be using it", append(args, "not_logged", n, "per", takeoverLogEvery)...)
}

// OnSysInfoTick publishes the stats on SysSessionsTopic when they changed
// (through the inline client: each counts in mochi's received messages).
func (h *sessionHook) OnSysInfoTick(*system.Info) {
	h.sysMu.Lock()
	defer h.sysMu.Unlock()
	b, err := json.Marshal(h.stats())
	if err != nil || string(b) == h.lastSys {
		return
	}
	h.lastSys = string(b)
	_ = h.srv.Publish(SysSessionsTopic, b, true, 0)
}

func (s *session) info() SessionInfo {
	return SessionInfo{Client: s.id, Online: !s.offline, OfflineSince: s.since, QueuedMessages: s.q.Len(), QueuedBytes: s.bytes,
		Discarded: s.disc, DiscardedBytes: s.discB}
}

func (h *sessionHook) stats() SessionStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := SessionStats{
		OfflineSessions: len(h.offline), QueuedMessages: h.offMsgs, QueuedBytes: h.offBytes,
		Discarded: h.disc, DiscardedBytes: h.discB, SessionsExpired: h.expired, SessionsEvicted: h.evicted, Takeovers: h.taken,
		Largest: make([]SessionInfo, 0, min(len(h.offline), largestSessions)),
	}
	all := make([]SessionInfo, 0, len(h.offline))
	for _, s := range h.offline {
		all = append(all, s.info())
	}
	slices.SortFunc(all, func(a, b SessionInfo) int {
		return cmp.Or(cmp.Compare(b.QueuedBytes, a.QueuedBytes), cmp.Compare(a.Client, b.Client))
	})
	st.Largest = append(st.Largest, all[:min(len(all), largestSessions)]...)
	return st
}

func (h *sessionHook) session(id string) (SessionInfo, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[id]
	if s == nil {
		return SessionInfo{}, false
	}
	return s.info(), true
}
