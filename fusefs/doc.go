// Package fusefs serves a disk image through FUSE (go-fuse v2), read-only
// or, over a copy-on-write disk (Options.ReadWrite), with writable file
// trees and writable raw files.
//
// Vocabulary:
//   - root: the mount's top directory. It holds disk.img (the whole disk,
//     raw), pN.img (partition N, raw, exactly its bytes, so the kernel can
//     loop-mount it) and pN/ (partition N's filesystem as a file tree, when
//     a driver recognised it and it implements fsdrivers.Filesystem).
//   - partition: a disk.Part (package fsdrivers/disk) as the caller opened
//     it: its table entry (the number names pN), a bounded reader of its
//     bytes and, when a driver recognised it, its volume.
//   - tree node: a file, directory, symlink, device or fifo inside pN/,
//     addressed by its io/fs path in the partition's filesystem.
//   - inode number: pN's files show the filesystem's own inode number with
//     the partition's index in the top 16 bits, so hard links share an inode
//     number and partitions never collide.
//   - read-write mount: a partition whose filesystem the caller opened for
//     writing (Options.Trees, fsdrivers.WritableFS) shows as a writable
//     pN/ whose nodes are the filesystem's inode numbers (wtree.go); its
//     pN.img and disk.img are then read-only, one writer per byte. Other
//     partitions' pN.img (and disk.img when no tree is writable) take
//     writes into a WritableDisk (an imagefmt.Overlay), pN.img bounded to
//     its partition (write.go has the rules a writable raw file follows);
//     their read-only trees are not shown, as the kernel's writes through
//     pN.img would leave the drivers' caches stale.
//
// A read-only image is immutable, so everything is cached hard: file data
// (open with FOPEN_KEEP_CACHE), directory listings (FOPEN_CACHE_DIR),
// attributes, entries and negative entries for an hour, symlink targets.
// Nothing is walked at mount time: a directory is listed when the kernel
// asks for it. Reads go straight from the request's buffer to ReaderAt.
//
// Errors are mapped in one place (toErrno): a missing name is ENOENT; a
// damaged filesystem or a chunk failing its checksum is EIO, with one log
// line naming the file and the error (which names the chunk) through the
// optional *slog.Logger. Wrong bytes are never served.
package fusefs
