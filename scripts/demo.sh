#!/usr/bin/env bash
# Starts gateway, cloudproc and one device on the synthetic source with a CPU
# emulated 12× slower, in automatic mode with a target of 25 fps. The device
# prints a status line every 2 s. Ctrl-C (or DURATION seconds) stops the
# device, which drains and prints its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "logs: $logs"
}
trap cleanup EXIT

./bin/gateway -c configs/gateway.toml --listen 127.0.0.1:0 >"$logs/gateway.out" 2>"$logs/gateway.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$logs/gateway.out" ] && break; sleep 0.1; done
addr=$(head -n1 "$logs/gateway.out" | awk '{print $NF}')
[ -n "$addr" ] || { echo "gateway did not start:"; cat "$logs/gateway.log"; exit 1; }
echo "gateway on $addr"

./bin/cloudproc -c configs/cloud.toml --broker "tcp://$addr" 2>"$logs/cloudproc.log" &
pids+=($!)

h="-h ${addr%:*} -p ${addr##*:}"
echo "device pi1: synthetic source at 30 fps, CPU emulated 12x slower, automatic split, target 25 fps"
echo "in another terminal:"
echo "  results:    mosquitto_sub $h -t 'offload/+/result' -v"
echo "  decisions:  mosquitto_sub $h -t 'offload/+/control/#' -t 'offload/+/state' -v"
echo "  telemetry:  mosquitto_sub $h -t 'offload/+/telemetry' -v"
echo "  manual:     mosquitto_pub $h -t offload/pi1/control/split/set -m 1   (auto: -m auto)"
echo "  faster CPU: mosquitto_pub $h -t offload/pi1/control/slowdown/set -m 1"
./bin/device -c configs/pi.toml --broker "tcp://$addr" --slowdown 12 --target-fps 25 2>"$logs/device.log" &
dev=$!
if [ -n "${DURATION:-}" ]; then
	( sleep "$DURATION"; kill -INT "$dev" 2>/dev/null ) &
fi
trap 'kill -INT "$dev" 2>/dev/null || true' INT TERM
wait "$dev" || true
trap cleanup EXIT
