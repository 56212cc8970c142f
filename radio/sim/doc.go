// Package sim simulates the radio side of the gateway for tests and the
// demo: RCP is a fake OpenThread radio co-processor that speaks the device
// side of Spinel over HDLC-lite; Port puts it behind a real pseudo-terminal
// published at a stable path, so the real spinel driver opens it through
// go.bug.st/serial exactly as it would open /dev/ttyACM0; Air is an
// in-memory Medium with loss and delay that simulated nodes join; Node is a
// simulated CoAP device on it; Network, registered as the "sim" radio
// driver, runs all of these with the real spinel driver on the pty.
//
// Section numbers in comments refer to draft-rquattle-spinel-unified.
package sim
