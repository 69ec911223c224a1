// Package ext4 reads ext2, ext3 and ext4 filesystems from an io.ReaderAt:
// identification, the map of used bytes for filesystem-aware capture, and a
// read-only io/fs file tree. It is the project's own reader, written from the
// on-disk format description in the kernel's
// Documentation/filesystems/ext4/ and checked against e2fsprogs and the
// kernel in the tests.
//
// Vocabulary (the on-disk names, so the code can be read beside the spec):
//   - block: the allocation unit, 1 KiB to 64 KiB (s_log_block_size).
//     cluster: the bitmap unit; equal to a block unless bigalloc.
//   - group (block group): blocks_per_group consecutive blocks starting at
//     first_data_block (1 on 1 KiB-block filesystems, where block 0 holds
//     the boot sector and belongs to no group). Each group has a
//     descriptor (32 or 64 bytes, "desc") naming its block bitmap, inode
//     bitmap and inode table. With flex_bg those may live in another group.
//   - GDT: the array of group descriptors, after the superblock; "reserved
//     GDT" blocks follow it for online resize. meta_bg moves descriptor
//     blocks into the first, second and last group of each meta group.
//   - backup groups: groups that carry a superblock and GDT copy (all,
//     sparse_super: 0, 1 and powers of 3, 5, 7; sparse_super2: two listed).
//   - BLOCK_UNINIT / INODE_UNINIT: group flags meaning a bitmap was never
//     written and must be computed (only honoured when group descriptor
//     checksums are on: gdt_csum or metadata_csum).
//   - inode: 128 bytes plus an "extra" area (i_extra_isize) holding
//     nanosecond timestamps, creation time, checksum high bits, then in-inode
//     extended attributes.
//   - i_block: 60 bytes in the inode: an extent tree root, a block map
//     (12 direct, single, double, triple indirect pointers), a fast symlink
//     target, inline file/dir data, or a device number.
//   - extent: (logical block, length, physical block), "unwritten" when
//     allocated but never written (reads as zeros); index nodes point to
//     further extent blocks, depth <= 5.
//   - dirent: inode, rec_len, name_len, file_type, name. A leaf block may end
//     in a 12-byte "tail" dirent carrying its crc32c (metadata_csum).
//   - htree (dir_index): a hashed B-tree over directory blocks: dx_root in
//     block 0, dx_node interior blocks, leaf blocks of ordinary dirents.
//     Hashes: legacy, half_md4, tea, each signed or unsigned char.
//   - inline data: small files/dirs kept in i_block plus the "system.data"
//     xattr.
//   - xattr: name index + suffix + value, in the inode's extra area and/or
//     one external block (i_file_acl); large values in an "EA inode".
//   - csum seed: crc32c of the UUID (or s_checksum_seed); the inode seed
//     folds in the inode number and generation.
//
// What a *Volume offers (Driver{}.Open returns one as fsdrivers.Volume):
//   - Type, UUID, Label, as blkid reports them.
//   - UsedRanges (fsdrivers.UsedRanger), with Warnings listing the groups
//     counted as fully used because their descriptor or bitmap failed its
//     checksum. A filesystem whose journal needs recovery is counted as
//     entirely used: its bitmaps may not yet show what replay will claim.
//   - The read-only file tree (fsdrivers.Filesystem). Lookups go through
//     the htree when a directory has one; file reads map a byte range to
//     extent runs and issue one ReadAt per contiguous run. Parsed inodes,
//     extent blocks and metadata blocks are cached (bounded LRUs); the
//     volume is safe for concurrent use.
//
// Writing (Driver.OpenWritable, fsdrivers.WritableFS; write.go and the
// files beside it): node-addressed create, write (holes, contiguous
// allocation after the file's last block), truncate, fallocate (unwritten
// extents, punch hole), mkdir, rmdir, unlink, rename (RENAME_NOREPLACE,
// RENAME_EXCHANGE, ".." fixed), symlink (fast and slow), hard links,
// device nodes, FIFOs and sockets, chmod/chown/utimes. Extent trees are
// rewritten in their shortest shape (index blocks as needed); ext2/ext3
// block maps are changed in place. Directories stay linear or htree: a
// full one-block directory becomes an htree as in the kernel, entries go
// into the leaf their hash selects, full leaves and index blocks are
// split, a root that fills grows a second level. Bitmaps of BLOCK_UNINIT
// and INODE_UNINIT groups are built when first used; every checksum
// (superblock, descriptors, bitmaps, inodes, extent, directory and htree
// blocks) is kept right, crc16 descriptors under gdt_csum too.
//
// Our writes do not go through the journal: each edit becomes one atomic
// image commit (the copy-on-write overlay), so the journal is left clean
// and untouched; a journal that needs recovery is replayed first (see
// below). A filesystem using a feature the writer does not keep right
// (bigalloc, encrypt, casefold, quota, ea_inode, mmp, verity, ...) is
// refused for writing with the feature named; reading keeps working.
//
// Extended attributes (xattrw.go) are set and removed in the inode's area
// first, spilling to one external block, as the kernel places them; a
// block shared by several inodes is copied on write; POSIX ACLs are stored
// in ext4's compact form and set the mode bits as the kernel does. Inline
// data (inlinew.go): inline files are edited in place while they fit the
// inode and converted to extents when they outgrow it; an inline directory
// is converted to a one-block directory on its first change; new regular
// files begin inline (as in the kernel), new directories with a block. Metadata changes are
// cached as dirty blocks (bounded; flushed early past maxDirtyBytes) and
// written by Sync; file data goes straight to the device. Unlinked nodes
// still held go on the orphan list and are freed at their last Release;
// OpenWritable processes a leftover orphan list as the kernel does at
// mount.
//
// Not supported: casefolded lookups ignore case folding (exact names only),
// encrypted directories are refused (ErrUnsupported).
//
// The journal: reading never replays it. A filesystem left needing recovery
// (needs_recovery set after a crash) is read as it is on disk, like debugfs
// does: the changes of the committed transactions still in the journal are
// not visible, so recently written files may be missing or stale until the
// filesystem is replayed (by the kernel's mount, e2fsck, or opening it for
// writing). Opening for writing replays the journal first (replay.go: the
// jbd2 scan, revoke and replay passes, as e2fsck does: v1 to v3 checksums,
// 32/64-bit tags, escaped blocks, revokes, async commits, a log that wraps),
// then marks it empty and clears needs_recovery. It refuses, wrapping
// fsdrivers.ErrReadOnly and writing nothing, an external journal device,
// unknown journal features and pending fast commits, and with
// fsdrivers.ErrCorrupt a damaged log.
//
// Reading never trusts the image: every pointer is range-checked, loops are
// bounded by what the filesystem could legitimately hold, checksums are
// verified when metadata_csum is on, and a damaged structure gives an error
// wrapping fsdrivers.ErrCorrupt for that file or directory only.
package ext4
