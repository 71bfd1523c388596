// Package hostinfo reads the figures of the machine a process runs on
// (CPU, memory, load, temperature) through gopsutil. A figure the machine
// does not offer is nil.
package hostinfo

import (
	"context"
	"math"
	"strings"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/sensors"
	"github.com/splitpoint/splitpoint/wire"
)

// Read returns the current figures. CPU percent is measured since the
// previous call (the first call primes it and may return 0).
func Read(ctx context.Context) wire.Host {
	var h wire.Host
	if v, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(v) == 1 {
		h.CPUPercent = ptr(v[0])
	}
	if v, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		h.MemPercent = ptr(v.UsedPercent)
	}
	if v, err := load.AvgWithContext(ctx); err == nil {
		h.Load1 = ptr(v.Load1)
	}
	if temps, err := sensors.TemperaturesWithContext(ctx); err == nil {
		h.TemperatureC = cpuTemperature(temps)
	}
	return h
}

// cpuTemperature picks the CPU's sensor: the Raspberry Pi's cpu_thermal,
// x86's coretemp/k10temp package sensors, or else the hottest sensor.
func cpuTemperature(temps []sensors.TemperatureStat) *float64 {
	var best *float64
	for _, pref := range []string{"cpu_thermal", "cpu-thermal", "coretemp_package", "k10temp_tctl", "soc_thermal"} {
		for _, t := range temps {
			if strings.HasPrefix(strings.ToLower(t.SensorKey), pref) && valid(t.Temperature) {
				return ptr(t.Temperature)
			}
		}
	}
	for _, t := range temps {
		if valid(t.Temperature) && (best == nil || t.Temperature > *best) {
			best = ptr(t.Temperature)
		}
	}
	return best
}

func valid(c float64) bool { return c > -50 && c < 150 && !math.IsNaN(c) }

func ptr(v float64) *float64 {
	r := math.Round(v*10) / 10
	return &r
}
