package gateway

import (
	"reflect"
	"testing"

	"github.com/splitpoint/splitpoint/config"
)

func TestShippedConfigEqualsDefaults(t *testing.T) {
	got := DefaultConfig()
	if _, err := config.Load("../../configs/gateway.toml", &got); err != nil {
		t.Fatal(err)
	}
	got2 := Config{}
	if _, err := config.Load("../../configs/gateway.toml", &got2); err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got2, want) {
		t.Errorf("configs/gateway.toml differs from the defaults:\n file %+v\n defaults %+v", got2, want)
	}
}
