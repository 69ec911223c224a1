// Package imagefmt reads and writes the .dimg image format (specified byte
// by byte in FORMAT.md): version 1, written once, and version 2, which
// takes commits in place.
//
// Vocabulary:
//   - disk: the logical address space an image holds, DiskSize bytes.
//   - chunk: a fixed-size piece of the disk; chunk i covers bytes
//     [i·ChunkSize, (i+1)·ChunkSize), the last one may be shorter. Each is
//     in one ChunkState: stored (in a frame), zero (in use and all zero,
//     inside a zero run) or unused (not in use on the source).
//   - frame: one stored chunk in the file: a 64-byte frame header (chunk
//     number, method, lengths, SHA-256 of the chunk's bytes, CRCs) followed
//     by the payload (lz4 block, zstd frame in version 2, or raw).
//   - zero-run record: a 64-byte record in the data area naming a run of
//     zero chunks, so a reader of a stream can zero them before the index.
//   - record: a frame or a zero-run record; the data area is the records,
//     in chunk order, between the header and the index.
//   - index: the sorted list of (chunk, frame offset, stored length) and
//     the merged zero runs, written after the last record; the footer
//     (fixed size, at the very end) points at it and carries the digest.
//   - digest: SHA-256 over the concatenated SHA-256 sums of every chunk's
//     logical bytes (absent chunks: the sum of zeros), so it can be checked
//     chunk by chunk, in parallel, without hashing runs of zeros. In
//     version 2, the root hash of the index tree instead.
//   - index tree (version 2): 256-way nodes over chunk numbers whose leaves
//     hold each stored chunk's frame offset, length and SHA-256 and the
//     zero and unused runs; each node records its children's hashes, so a
//     commit rehashes only what it changed. Read on demand, cached.
//   - commit (version 2): a change appended in place: frames, run records,
//     the changed nodes and a commit record (number, time, message,
//     digest, parent). Every commit stays readable; Log lists them.
//   - slot (version 2): one of two fixed places in the header region that
//     name the newest commit. A commit is written and synced first, named
//     in the older slot second: a crash leaves the previous commit or the
//     new one, never a broken image.
//   - delta (version 2): an image whose absent chunks are a base image's,
//     named by UUID and commit digest; a base may be a delta (a chain).
//   - feature flags (version 2): incompatible, read-only-compatible and
//     compatible bits with ext4's rules; delta and zstd are incompatible.
//   - rule: one named condition of FORMAT.md "Validity". validate.go is
//     the one validator: the Reader, the StreamReader and Verify all check
//     the rules through it, so they accept exactly the same files.
//   - writer lock: at most one process writes an image at a time
//     (LockWriter: an flock on IMAGE.lock, which describes the holder for
//     the refusal message); readers never take it.
//
// Writer streams forward once (pipes and sockets work); Encoder compresses
// chunks and may run on many goroutines, one Encoder each. Reader is an
// io.ReaderAt over the disk that opens with small reads of the header,
// footer and index, decompresses only the chunks a read touches, verifies
// each and keeps a bounded cache. StreamReader reads an image from an
// io.Reader (restore from stdin), record by record, and checks the index,
// footer and digest at the end (of a version 2 image with several commits,
// it replays them: the last record for a chunk wins). Reader.Verify checks
// everything. OpenChain opens a delta with its bases. Editor appends
// commits to a version 2 file and is an overlay Committer; CreateDelta
// starts a delta over a base. Diff yields the chunk changes between two
// disks of one geometry (a revert commits Diff(newest, older)), walking
// their index trees only where they differ.
//
// Errors: every error for bad input wraps exactly one of ErrFormat (not a
// dimg image, or a version this package does not read), ErrCorrupt (a dimg
// image that breaks a structural rule, including an incomplete one) and
// ErrChecksum (a chunk's stored bytes fail their checksums). The detail is
// a *RuleError (which rule, at which file offset); an error about one chunk
// is also a *ChunkError (which chunk, which disk bytes). Callers map the
// three sentinels to exit codes and print the rest.
package imagefmt
