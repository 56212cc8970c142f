// Package sixlowpan carries IPv6/UDP datagrams in IEEE 802.15.4 frames:
// LOWPAN_IPHC header compression and LOWPAN_NHC UDP compression (RFC 6282),
// fragmentation and reassembly (RFC 4944 §5.3), and the uncompressed IPv6
// dispatch (RFC 4944 §5.1) on receive.
//
// The send side is Codec.Fragment: one IPv6 packet in, the MAC payloads of
// its frames out. The receive side is Reassembler.Input: MAC payloads in,
// whole IPv6 packets out, with memory bounded per source and in total and
// a timeout. AppendUDP and ParseUDP build and check the IPv6/UDP packets
// around them.
//
// Interface identifiers derive from MAC addresses as RFC 6282 §3.2.2 says:
// an extended address is an EUI-64 with the universal/local bit inverted, a
// short address XXXX becomes 0000:00ff:fe00:XXXX (no PAN ID, unlike RFC 4944
// §6). Context 0 of the Codec is normally the network's /64 prefix, so a
// node's global address compresses as fully as its link-local one.
//
// Not supported, each reported as ErrUnsupported: LOWPAN_NHC for IPv6
// extension headers (§4.2), elided UDP checksums (§4.3.2 requires an
// integrity check this stack cannot verify), mesh and broadcast headers.
package sixlowpan
