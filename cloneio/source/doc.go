// Package source is the one way a command opens "an IMAGE argument": a
// .dimg image, a raw disk file or a block device, with its partition
// layout, filesystems probed when first needed, and N:/PATH addressing of
// the files inside.
//
// Vocabulary:
//   - Source: the logical disk bytes (an io.ReaderAt of Size bytes) and what
//     is known about them: the image they come from, if any; the partition
//     table, read when first asked; each partition's filesystem, probed
//     when first asked, so `dimg cat IMAGE 2:/file` reads the superblocks
//     of partition 2 only.
//   - Backing: what a Source is made of. Open builds one from a path; New
//     takes one from a caller that opened the bytes some other way. A
//     copy-on-write overlay, a chain of delta images or an image read over
//     a URL plugs in here: each is an io.ReaderAt with a size (and, for an
//     image, its *imagefmt.Reader), and every command that takes an IMAGE
//     argument then reads it unchanged.
//   - raw: bytes that are not a dimg image (a dd image, a block device),
//     read as the disk itself. Only with Options.Raw; a file named *.dimg
//     is never taken for a raw disk, so a damaged image is reported as
//     damaged rather than listed as an empty disk.
//   - spec: "N:/PATH", partition N as the partition table numbers it and an
//     absolute path in its filesystem; a bare "/PATH" names the only
//     filesystem with files. A Location is a resolved spec.
//
// Filesystem drivers are passed in (Options.Drivers), never registered:
// which filesystems a command understands is the command's choice.
//
// Errors: a spec that cannot name a file (partition 0, a bare path on a
// disk with several filesystems, an unsafe path) wraps ErrSpec, a usage
// mistake; damage is reported with the sentinels of the layer that found
// it (imagefmt.ErrChecksum, fsdrivers.ErrCorrupt, parttable.ErrCorrupt)
// and a verification that found damage returns a *VerifyError.
package source
