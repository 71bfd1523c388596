package packets

import (
	"bytes"
	"testing"
)

// splitpoint patch (PATCHES.md): the header PublishEncodeHeader writes,
// followed by the payload, is what PublishEncode writes — for every
// publish test packet, and with payloads whose remaining length needs
// two, three and four bytes.
func TestPublishEncodeHeaderThenPayloadIsPublishEncode(t *testing.T) {
	tested := 0
	for _, wanted := range TPacketData[Publish] {
		if (wanted.Group != "" && wanted.Group != "encode") || wanted.Expect != nil || wanted.RawBytes == nil || wanted.Packet == nil {
			continue
		}
		tested++
		for _, size := range []int{-1, 200, 20000, 3 << 20} {
			pk := *wanted.Packet
			if size >= 0 {
				pk.Payload = bytes.Repeat([]byte{0xa5}, size)
			}
			whole, head := new(bytes.Buffer), new(bytes.Buffer)
			p1, p2 := pk, pk
			if err := p1.PublishEncode(whole); err != nil {
				t.Fatalf("%s: %v", wanted.Desc, err)
			}
			if err := p2.PublishEncodeHeader(head); err != nil {
				t.Fatalf("%s: %v", wanted.Desc, err)
			}
			head.Write(pk.Payload)
			if !bytes.Equal(whole.Bytes(), head.Bytes()) {
				t.Errorf("%s, payload %d: header + payload differs from PublishEncode", wanted.Desc, len(pk.Payload))
			}
		}
	}
	if tested < 5 {
		t.Fatalf("only %d publish packets tested", tested)
	}
}

// splitpoint patch: Copy shares the payload (a packet's payload is never
// written after it is decoded) and still copies everything else.
func TestCopySharesThePayload(t *testing.T) {
	pk := *TPacketData[Publish].Get(TPublishMqtt5).Packet
	pk.Payload = []byte("a large frame")
	c := pk.Copy(false)
	if &c.Payload[0] != &pk.Payload[0] || string(c.Payload) != "a large frame" {
		t.Errorf("the copy's payload is not the original's")
	}
	c.TopicName = "other"
	c.Properties.User = append(c.Properties.User, UserProperty{Key: "k", Val: "v"})
	if pk.TopicName == "other" || len(pk.Properties.User) == len(c.Properties.User) {
		t.Errorf("changing the copy changed the original")
	}
}
