package cloudproc

import (
	"reflect"
	"testing"
)

func TestShippedConfigEqualsDefaults(t *testing.T) {
	got, _, err := LoadConfig("../configs/cloud.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("configs/cloud.toml differs from the defaults:\n file %+v\n defaults %+v", got, want)
	}
}
