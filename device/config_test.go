package device

import (
	"reflect"
	"testing"

	_ "github.com/splitpoint/splitpoint/tasks/balltrack"
)

func TestShippedConfigEqualsDefaults(t *testing.T) {
	got, _, err := LoadConfig("../configs/pi.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	if err := want.Validate(); err != nil { // fills the pipeline's default options
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("configs/pi.toml differs from the defaults:\n file %+v\n defaults %+v", got, want)
	}
}
