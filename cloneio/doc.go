// Package cloneio moves disk contents: capture (disk → image), restore
// (image → disk) and clone (disk → disk), as pipelines of chunks. Its
// subpackages move data too: multicast (send/receive an image), extract
// (files out of an image's filesystems onto the host), and source opens
// what they read from: an IMAGE argument (an image, a raw disk file or a
// block device), its partitions and filesystems, N:/PATH.
//
// Vocabulary:
//   - Device: an opened source or target, a block device or a regular file,
//     with its size and logical sector size.
//   - Plan: which byte ranges of a source disk hold data worth copying
//     (everything in sector mode; the filesystems' used bytes plus the
//     partition tables and boot areas otherwise) and the DiskInfo that
//     describes the disk in the image header.
//   - chunk states (imagefmt): stored, zero (used, all zero: must be zeroed
//     on a device), unused (free space: left alone, or discarded).
//   - Progress: a counter the caller passes in; no-op by default.
//
// Capture reads sequentially with one goroutine, compresses on all cores
// (one imagefmt.Encoder per worker) and writes frames in order through a
// bounded queue, so memory stays a few MiB whatever the disk size.
// Restore decodes on all cores and writes with WriteAt, so order does not
// matter; a regular-file target is sparse (holes where nothing is stored)
// and is written under a temporary name, then renamed.
package cloneio
