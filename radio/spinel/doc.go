// Package spinel is the host driver for an OpenThread radio co-processor
// (RCP) on a serial port: HDLC-lite framing, the Spinel command codec, and
// Driver, a radio.Link that brings the RCP up, transmits and receives raw
// IEEE 802.15.4 frames through PROP_STREAM_RAW, and recovers on its own when
// the device goes away or resets.
//
// Section numbers in comments refer to draft-rquattle-spinel-unified (the
// 2017 rendering in ../shared/specs); where the newer markdown source or
// OpenThread's spinel.h defines something the draft does not (CAP_CONFIG_RADIO,
// PROP_RCP_API_VERSION, the RCP's transmit metadata), the comment says so.
package spinel
