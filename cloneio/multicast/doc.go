// Package multicast deploys one .dimg image to many targets at once over
// IP multicast (dimg send / dimg receive), with NACK-based repair,
// Reed–Solomon parity, a rate limit with a congestion response, and a
// verified result per receiver.
//
// Vocabulary:
//   - session: one run of Send, named by a random 64-bit session id and
//     bound to one image (its digest). Every packet carries the session id
//     and the first 8 bytes of the image digest (the digest tag); packets
//     of another session are dropped and counted, never written.
//   - rendezvous: the multicast group and port where the sender announces
//     the session (ANNOUNCE) and sends data. Receivers answer by unicast
//     UDP to the address the announcements come from (HELLO, STATUS, DONE).
//   - object: one stored frame of the image (64-byte frame header + lz4 or
//     raw payload, exactly as stored in the file). Objects are numbered
//     0..N-1 in chunk order; a receiver checks each frame's CRC and SHA-256
//     before it writes the chunk. After the frames come zero-run tables
//     (wire.go): the chunks that were in use and all zero, which a
//     device target must zero, unlike unused chunks, which it leaves alone
//     as restore does. A receiver writes through cloneio's restore target
//     (cloneio.Target and ChunkWriter), exactly as restore and clone do:
//     the same zero and unused handling, read-back check and commit, which
//     fits the partition table to a larger disk.
//   - symbol: a piece of an object that fits one datagram (1424 bytes for
//     a 1500-byte MTU, 1408 with a key); the last one of an object is
//     short and is zero-padded for the parity arithmetic.
//   - block: up to K consecutive data symbols of one object, the unit of
//     forward error correction. Parity symbols are rows of a systematic
//     Cauchy Reed–Solomon code over GF(2^8) (computed with
//     klauspost/reedsolomon): any k distinct symbols of a block, data or
//     parity, rebuild it. Up to 256-k parity rows exist per block.
//   - pass: the sender's first transmission of every object in order, with
//     --fec P proactive parity symbols per block of K.
//   - edge: the furthest (object, block) a receiver has seen from the pass;
//     what lies before it and is still incomplete was lost.
//   - NACK: a receiver's periodic report (in STATUS) of what it lacks: for
//     a block, how many more symbols it needs; for objects it never saw,
//     ranges. The sender answers a block's NACKs with fresh parity rows (the
//     largest need among receivers), so different losses at different
//     receivers are repaired by the same packets; whole objects are resent.
//   - repair round: after the pass, the sender serves the union of what
//     receivers still lack (late joiners, stragglers, evicted objects)
//     until every receiver is complete, gone, or stalled.
//   - rate: bytes per second the sender paces at with a token bucket; it
//     starts at --max-rate (or unpaced) and follows AIMD on the worst loss
//     that receivers report.
//   - DONE: a receiver's final report after it wrote every object, zeroed
//     absent chunks, flushed, and read its target back to recompute the
//     image digest: ok, or exactly which objects or chunks failed.
//
// The code is cut by what each part owns. Sender: send.go (the API),
// sender.go (phases and the main loop), objects.go (the image's objects),
// transmit.go (symbols, parity, pacing), roster.go (the receivers and
// their packets), repair.go (NACKs, parity and whole-object repairs).
// Receiver: receive.go (the API and the main loop), session.go (locking
// onto a session, talking to the sender), intake.go (data packets, loss,
// STATUS and NACKs), assembly.go (symbols to objects), write.go (objects
// to the target), fetch.go (the repair URL), finish.go (verification and
// the DONE report). Both: wire.go, fec.go, rate.go, net.go.
//
// The wire format is described in wire.go. A session with a key (--key)
// appends HMAC-SHA256 (truncated to 16 bytes) to every packet in both
// directions; without a key the session id and digest tag guard against
// stale and foreign senders, not against a hostile host on the LAN.
package multicast
