package mqtt

import (
	"bytes"
	"io"
	"runtime"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// sentBytesHook wants every packet's bytes (OnPacketSent).
type sentBytesHook struct {
	HookBase
	got [][]byte
}

func (h *sentBytesHook) ID() string { return "sent-bytes" }
func (h *sentBytesHook) Provides(b byte) bool {
	return b == OnPacketSent
}
func (h *sentBytesHook) OnPacketSent(_ *Client, _ packets.Packet, b []byte) {
	h.got = append(h.got, b)
}

// write sends pk through a test client (with the OnPacketSent hook when
// hook is not nil) and returns the bytes of the connection's first read
// and all of them.
func write(t *testing.T, pk packets.Packet, hook *sentBytesHook) (first, all []byte) {
	t.Helper()
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	if hook != nil {
		if err := cl.ops.hooks.Add(hook, nil); err != nil {
			t.Fatal(err)
		}
	}
	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	got := make(chan [2][]byte, 1)
	go func() {
		buf := make([]byte, 1<<20)
		n, _ := r.Read(buf) // net.Pipe: one read gets at most one write
		rest, _ := io.ReadAll(r)
		got <- [2][]byte{buf[:n], append(buf[:n:n], rest...)}
	}()
	if err := cl.WritePacket(pk); err != nil {
		t.Fatal(err)
	}
	if n := cl.ops.info.MessagesSent; n != 1 {
		t.Errorf("messages sent %d, want 1", n)
	}
	cl.Net.Conn.Close()
	b := <-got
	return b[0], b[1]
}

// splitpoint patch (PATCHES.md): a publish with a large payload reaches
// the connection as its header and then the payload itself (two writes on
// a net.Pipe, one writev on TCP), the same bytes as the unpatched path
// makes, which still runs when a hook wants the packet's bytes
// (OnPacketSent) — for MQTT 3.1.1 and 5. A packet too large for the client
// is refused; a small payload is written in one piece as before.
func TestWritePacketLargePublish(t *testing.T) {
	for _, tc := range []struct {
		name string
		pk   packets.Packet
	}{
		{"v3", *packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).Packet},
		{"v5", *packets.TPacketData[packets.Publish].Get(packets.TPublishMqtt5).Packet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk := tc.pk
			pk.Payload = bytes.Repeat([]byte("frame"), 100000) // 500 kB
			hook := new(sentBytesHook)
			firstU, unpatched := write(t, pk, hook)
			firstP, patched := write(t, pk, nil)
			if len(firstU) != len(unpatched) {
				t.Errorf("with the hook: first write %d of %d bytes, want the whole packet at once", len(firstU), len(unpatched))
			}
			if len(hook.got) != 1 { // (its bytes: mochi passes the buffer after WriteTo drained it)
				t.Errorf("the OnPacketSent hook was called %d times, want 1", len(hook.got))
			}
			if len(firstP) != len(patched)-len(pk.Payload) {
				t.Errorf("without the hook: first write %d of %d bytes, want the header alone (%d)", len(firstP), len(patched), len(patched)-len(pk.Payload))
			}
			if !bytes.Equal(patched, unpatched) {
				t.Errorf("wrote %d bytes, the unpatched path %d, or they differ", len(patched), len(unpatched))
			}
		})
	}
	small := *packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).Packet
	small.Payload = make([]byte, vectoredPublishMin-1)
	if first, all := write(t, small, nil); len(first) != len(all) {
		t.Errorf("a %d-byte payload: first write %d of %d bytes, want one", len(small.Payload), len(first), len(all))
	}

	cl, _, _ := newTestClient()
	defer cl.Stop(errClientStop)
	pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).Packet
	pk.Payload = make([]byte, 100000)
	cl.Properties.Props.MaximumPacketSize = 99999
	if err := cl.WritePacket(pk); err != packets.ErrPacketTooLarge {
		t.Errorf("a packet over the client's maximum: %v, want ErrPacketTooLarge", err)
	}
}

// splitpoint patch (PATCHES.md): ReadPacket decodes the buffer it reads a
// packet into, without copying it first (v2.7.9 allocated and copied every
// packet twice), and a packet read after it leaves its payload unchanged.
func TestReadPacketDecodesInPlace(t *testing.T) {
	const size = 500_000
	for _, v := range []byte{4, 5} {
		cl, r, _ := newTestClient()
		defer r.Close() // unblocks the writer if the test stops early
		defer cl.Stop(errClientStop)
		cl.Properties.ProtocolVersion = v
		enc := func(b byte) []byte {
			pk := packets.Packet{ProtocolVersion: v, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName: "offload/pi1/2", PacketID: uint16(b) + 1, Payload: bytes.Repeat([]byte{b}, size)}
			var buf bytes.Buffer
			if err := pk.PublishEncode(&buf); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}
		first, second := enc(7), enc(9)
		go func() {
			_, _ = r.Write(first)
			_, _ = r.Write(second)
		}()
		read := func() packets.Packet {
			t.Helper()
			var fh packets.FixedHeader
			if err := cl.ReadFixedHeader(&fh); err != nil {
				t.Fatal(err)
			}
			pk, err := cl.ReadPacket(&fh)
			if err != nil {
				t.Fatal(err)
			}
			return pk
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		pk := read()
		runtime.ReadMemStats(&m1)
		if got := m1.TotalAlloc - m0.TotalAlloc; got >= size*3/2 {
			t.Errorf("v%d: reading a %d-byte publish allocated %d bytes, want less than 1.5× the packet", v, size, got)
		}
		pk2 := read()
		if !bytes.Equal(pk.Payload, bytes.Repeat([]byte{7}, size)) || !bytes.Equal(pk2.Payload, bytes.Repeat([]byte{9}, size)) {
			t.Errorf("v%d: payloads changed (first starts %v, second %v)", v, pk.Payload[:4], pk2.Payload[:4])
		}
		if pk.TopicName != "offload/pi1/2" || pk.PacketID != 8 || pk2.PacketID != 10 {
			t.Errorf("v%d: decoded topic %q packet IDs %d %d", v, pk.TopicName, pk.PacketID, pk2.PacketID)
		}
	}
}
