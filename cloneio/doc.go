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
//   - Target: where a disk is written, a block device or a regular file.
//     Restore, clone and multicast receive all open it, write it through a
//     ChunkWriter, and end with Commit (the partition table fitted to the
//     target: the GPT backup at the end of a larger disk, --grow,
//     --new-disk-guid; a file renamed into place) or Abort.
//   - ChunkWriter: the one write path onto a Target — stored chunks written
//     in any order from many goroutines, zero runs zeroed, unused chunks
//     left alone — and the one read-back check (Verify), which recomputes
//     the image digest from what the target holds.
//   - Shrinker: restore and clone onto a smaller target. The source's
//     filesystems are measured and shrunk on a copy-on-write overlay of it
//     (resize2fs and ntfsresize on files an Exposer serves, fat.Resize,
//     swap.Resize), a ShrinkPlan lays the partitions out anew (order and
//     numbers kept, boot areas and BIOS boot partitions pinned), and a
//     composed disk (the new table over the shrunk partitions at their new
//     places) goes through Clone and a Target like any other.
//   - rewrite: the disk an imagefmt.Reader shows (a commit of an image,
//     or a delta chain) written as a new standalone image with one commit,
//     same UUID and digest (Rewrite; RewriteTo for flatten and convert;
//     Compact in place, under the image's writer lock). Frames are copied
//     after being checked, or recompressed; the sums must add up to the
//     source digest before the new file is synced and renamed.
//   - revert: a commit equal to an older one (imagefmt.Diff), under the
//     writer lock.
//   - progress: a progress.Reporter the caller passes in; nil is a no-op.
//
// Capture and clone read the source with one reader (chunkReader): one
// goroutine in order, prefetching ahead, skipping chunks the plan does
// not touch. Capture compresses on all cores (one imagefmt.Encoder per
// worker) and writes frames in order through a bounded queue, so memory
// stays a few MiB whatever the disk size. Restore decodes on all cores and
// writes with WriteAt, so order does not matter; a regular-file target is
// sparse (holes where nothing is stored) and is written under a temporary
// name, then renamed.
package cloneio
