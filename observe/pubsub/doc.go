// Package pubsub is gatewayd's CoAP publish-subscribe broker, after
// draft-ietf-core-coap-pubsub (the -21 editor's copy): a topic collection,
// topic resources holding each topic's configuration as a CBOR map, and
// topic-data resources that publishers PUT to and subscribers observe.
//
// The broker is a stage of the proxy's chain placed after the Observe hub
// (package observe). For a subscription the hub hands the request down with
// itself as its coap.Request.Observer; the broker then acts as the origin
// of that observation: it writes the first response, hands the hub a
// cancel function and reports every later publication with
// Observer.Notify. The
// hub does the fan-out to the subscribers. Without a hub the broker answers
// one-shot responses. Who may administer topics, publish and subscribe is
// decided by access lists (package acl) in the stage and, for the proxy to
// place before the hub, in Gate.
//
// Publication payloads are opaque: a COSE-protected representation is
// stored, persisted and fanned out byte for byte and never parsed
// (draft-hartke-core-e2e-security-reqs scenario 3.5, PR5.1–PR5.2). Every
// acknowledged change is written to the state directory before the answer
// goes out, so it survives a crash of the process.
package pubsub
