// Package mqtt bridges CoAP resources and MQTT v5 topics for gatewayd, in
// both directions, without looking into payloads: a COSE object or any
// other representation crosses byte for byte, its CoAP content format
// carried in MQTT v5 properties.
//
// Up (CoAP to MQTT): the Bridge observes a CoAP URI (a node's resource or
// a pub-sub topic-data resource) through an injected ObserveFunc and
// publishes each representation with QoS 1. Representations wait in a
// bounded in-memory queue until the broker acknowledges them (PUBACK), so
// a broker restart loses nothing that was accepted; when the queue is
// full the oldest entry is dropped and counted.
//
// Down (MQTT to CoAP): the Bridge subscribes with QoS 1 and PUTs each
// message's payload to a CoAP URI through an injected DoFunc; the message
// is acknowledged to the broker only after the PUT was answered.
package mqtt
