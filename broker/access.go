package broker

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Policy decides who may connect and what each client may read and write.
// The access hook asks it for every connect and every publish and
// subscription, and refuses whatever it does not allow.
type Policy interface {
	// Authenticate checks a client's credentials.
	Authenticate(clientID, username string, password []byte) bool
	// Allow reports whether the client may write (publish) or read
	// (subscribe to) topic. For a subscription, topic is the filter.
	Allow(clientID, username, topic string, write bool) bool
}

// AllowAll is the anonymous policy: every client, every topic.
type AllowAll struct{}

// Authenticate implements Policy.
func (AllowAll) Authenticate(string, string, []byte) bool { return true }

// Allow implements Policy.
func (AllowAll) Allow(string, string, string, bool) bool { return true }

// accessHook adapts a Policy to mochi. Unlike mochi's ledger it matches
// nothing itself: the policy sees exact topics and filters, and a topic the
// policy does not allow is refused.
type accessHook struct {
	mqtt.HookBase
	policy Policy
}

func (h *accessHook) ID() string { return "splitpoint-access" }

func (h *accessHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *accessHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return h.policy.Authenticate(cl.ID, string(pk.Connect.Username), pk.Connect.Password)
}

func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true // the gateway's own inline client
	}
	return h.policy.Allow(cl.ID, string(cl.Properties.Username), topic, write)
}
