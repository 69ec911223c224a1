// Package imagefmt reads and writes the .dimg image format (specified byte
// by byte in FORMAT.md).
//
// Vocabulary:
//   - disk: the logical address space an image holds, DiskSize bytes.
//   - chunk: a fixed-size piece of the disk; chunk i covers bytes
//     [i·ChunkSize, (i+1)·ChunkSize), the last one may be shorter.
//   - frame: one stored chunk in the file: a 64-byte frame header (chunk
//     number, method, lengths, SHA-256 of the chunk's bytes, CRCs) followed
//     by the payload (lz4 block or raw). Chunks that are all zero or unused
//     are not stored and read back as zeros.
//   - index: the sorted list of (chunk, frame offset, stored length) written
//     after the last frame; the footer (fixed size, at the very end) points
//     at it and carries the image digest.
//   - digest: SHA-256 over the concatenated SHA-256 sums of every chunk's
//     logical bytes (absent chunks: the sum of zeros), so it can be checked
//     chunk by chunk, in parallel, without hashing runs of zeros.
//
// Writer streams forward once (pipes and sockets work); Encoder compresses
// chunks and may run on many goroutines, one Encoder each. Reader is an
// io.ReaderAt over the disk that opens with small reads of the header and
// footer, decompresses only the chunks a read touches, verifies each and
// keeps a bounded cache. StreamReader reads an image from an io.Reader
// (restore from stdin), frame by frame, and checks the digest at the end.
package imagefmt
