// Package uploader delivers signed records to a receiver exactly once: a
// durable, checksummed, bounded Spool on disk is the source of truth, a
// Transport sends one record at a time, and the Uploader loop drains the
// spool with full-jitter backoff (internal/backoff), a quick retry of a
// blip, an outage window that spreads a fleet's return, Retry-After, a rate
// limit and a bandwidth cap (bytes/s, a token bucket on the injected clock,
// for either transport). Start, end and rotate records go in sequence order
// ahead of every clip segment; segments follow in sequence order.
//
// Clip segments (provenance.KindSegment) have their own budget in the spool:
// when a new segment does not fit, the oldest pending segments are deleted
// (logged, counted per event: Spool.DroppedSegments); no other record is
// ever evicted for a segment, and segments never count against the records'
// bound.
//
// A record is on disk (temp file, fsync, rename, fsync dir) before Put returns
// and is removed only after the receiver acknowledged it. A torn or
// bit-flipped file is quarantined and counted, never sent; a record the
// receiver refuses for good is quarantined with its reason. The uploader
// does not decide what an event is: it moves opaque bundle bytes.
//
// Two transports:
//   - HTTP PUTs a record to the receiver's /v1/events/<event>/<kind>; a 2xx
//     acknowledges it.
//   - MQTT publishes it at QoS 1 on <prefix>/<device>/events/<event>/<kind>
//     to a broker the receiver subscribes to; the receiver's ack on
//     <prefix>/<device>/ack acknowledges it (not the broker's PUBACK,
//     which a broker gives for messages it then drops). It also publishes the device's status, motion state
//     and thumbnail for Home Assistant (with discovery) and answers
//     commands on <prefix>/<device>/cmd/<name>. The broker URL rules, the
//     reconnect loop and the topic layout are shared with the receiver in
//     internal/mqttlink.
package uploader
