package gateway

import (
	"testing"

	_ "github.com/splitpoint/splitpoint/pipelines"
	"github.com/splitpoint/splitpoint/wire"
)

// What a device is announced with depends on its pipeline: a camera only
// where there are frames, the pipeline's own sensors on its results.
func TestDiscoveryFollowsThePipeline(t *testing.T) {
	vision := discovery("cam1", wire.DeviceState{Pipeline: "balltrack", Stages: 7}, false)
	if c, ok := vision.Components["camera"]; !ok || c["topic"] != wire.AnnotatedTopic("cam1") {
		t.Errorf("balltrack device without its annotated camera: %v", vision.Components["camera"])
	}
	sensor := discovery("mill1", wire.DeviceState{Pipeline: "vibration", Stages: 6}, false)
	if _, ok := sensor.Components["camera"]; ok {
		t.Error("a vibration device announced with a camera")
	}
	for _, key := range []string{"anomaly_score", "rms_x", "rms_y", "rms_z"} {
		c, ok := sensor.Components[key]
		if !ok || c["platform"] != "sensor" || c["state_topic"] != wire.ResultTopic("mill1") || c["unique_id"] != "splitpoint_mill1_"+key {
			t.Errorf("vibration sensor %s: %v", key, c)
		}
	}
	if sensor.Components["rms_x"]["unit_of_measurement"] != "m/s²" || sensor.Components["split"]["max"] != 5 {
		t.Errorf("rms unit %v, split max %v", sensor.Components["rms_x"]["unit_of_measurement"], sensor.Components["split"]["max"])
	}
}
