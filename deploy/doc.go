// Package deploy holds what runs splitpoint as system services: the
// systemd units in deploy/systemd (installed by `make install`) and the
// tests that install them into a temporary directory and check them with
// systemd-analyze. The README's "Running on a Raspberry Pi" describes an installation.
package deploy
