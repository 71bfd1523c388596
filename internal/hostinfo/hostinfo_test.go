package hostinfo

import (
	"context"
	"testing"

	"github.com/shirou/gopsutil/v4/sensors"
)

func TestReadGivesMemoryAndLoad(t *testing.T) {
	h := Read(context.Background())
	if h.MemPercent == nil || *h.MemPercent <= 0 || *h.MemPercent > 100 || h.Load1 == nil || h.CPUPercent == nil {
		t.Errorf("host figures %+v", h)
	}
}

func TestCPUTemperaturePrefersTheCPUSensor(t *testing.T) {
	temps := []sensors.TemperatureStat{{SensorKey: "nvme_composite", Temperature: 60}, {SensorKey: "cpu_thermal", Temperature: 48.3}}
	if c := cpuTemperature(temps); c == nil || *c != 48.3 {
		t.Errorf("got %v, want the Pi's cpu_thermal 48.3", c)
	}
	temps = []sensors.TemperatureStat{{SensorKey: "a", Temperature: 40}, {SensorKey: "b", Temperature: 55}, {SensorKey: "bad", Temperature: -273}}
	if c := cpuTemperature(temps); c == nil || *c != 55 {
		t.Errorf("got %v, want the hottest valid sensor", c)
	}
	if c := cpuTemperature(nil); c != nil {
		t.Errorf("no sensor gave %v, want nil", *c)
	}
}
