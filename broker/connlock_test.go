package broker

import (
	"net"
	"testing"
	"time"
)

// mqtt5ConnectTinyMaxPacket is an MQTT 5 CONNECT for client id "victim"
// whose Maximum Packet Size (4 bytes) no CONNACK fits: mochi gives up on the
// connection after OnSessionEstablish without calling any later hook.
var mqtt5ConnectTinyMaxPacket = []byte{
	0x10, 24, // CONNECT, remaining length
	0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, // protocol, level 5, clean start, keepalive
	5, 0x27, 0, 0, 0, 4, // properties: Maximum Packet Size 4
	0, 6, 'v', 'i', 'c', 't', 'i', 'm', // client id
}

// A connection that fails half way through session set-up must not keep
// its client id's set-up lock: the next connection with that id gets in at
// once, not after the lock's time-out (or never serialised again).
func TestSessionSetupLockIsNotLeaked(t *testing.T) {
	b := startTest(t, Limits{}, nil)
	for i := 0; i < 2; i++ {
		conn, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(mqtt5ConnectTinyMaxPacket); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = conn.Read(make([]byte, 16)) // the broker closes it
		conn.Close()
	}
	start := time.Now()
	c, _ := connect(t, b, "victim", true, nil)
	took := time.Since(start)
	c.Disconnect(0)
	if took > 2*time.Second {
		t.Fatalf("connecting as victim took %v: the set-up lock of the failed connection was left behind (time-out %v)", took, connectLockWait)
	}
	t.Logf("connect after two failed set-ups: %v", took)
}
