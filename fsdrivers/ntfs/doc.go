// Package ntfs reads NTFS volumes: identification, the clusters in use (for
// filesystem-aware capture) and a read-only file tree.
//
// The metadata is parsed by this package rather than by go-ntfs, whose
// directory listing scans every INDX block of a directory (stale blocks of
// deleted files included), drops second hard-link names, caps a stream at
// 20 attribute extents and does not guard against hostile input. Every
// structure here is bounded by what the volume could legitimately hold.
//
// Vocabulary:
//   - Boot sector: sector 0 of the volume ("NTFS    " at byte 3): sector,
//     cluster and MFT record sizes, the MFT's first cluster, the serial.
//     Its backup is the volume's last sector, outside the cluster range.
//   - MFT record (file record): a fixed-size "FILE" record, protected by
//     the update sequence array ("fixups": the last two bytes of every 512
//     bytes are stored in the header). Record n lives at n·recordSize in
//     the $MFT data stream. Records 0-15 are metafiles ($MFT, $MFTMirr,
//     $LogFile, $Volume, $AttrDef, ., $Bitmap, $Boot, $BadClus, $Secure,
//     $UpCase, $Extend, ...); a file reference is a record number in the
//     low 48 bits and a sequence number in the high 16.
//   - Attribute: typed, optionally named; resident (value inside the
//     record) or non-resident (a runlist of clusters). A file with many
//     attributes spreads them over extension records listed in its
//     $ATTRIBUTE_LIST; one stream may be split into several extents, each
//     covering a VCN range.
//   - VCN / LCN: virtual cluster number inside a stream / logical cluster
//     number on the volume. A run with no LCN is sparse (reads as zeros).
//   - Compression unit: 16 clusters compressed together with LZNT1; a unit
//     stored in fewer clusters than it spans is compressed, a full one is
//     raw, an unallocated one is zeros.
//   - Index ($I30): a directory is a B+ tree of $FILE_NAME keys: the root
//     node in $INDEX_ROOT, the other nodes in "INDX" blocks of
//     $INDEX_ALLOCATION. Every name of a file (hard links, the DOS 8.3
//     alias) has its own entry; DOS-only aliases are hidden, as ntfs-3g
//     hides them.
//   - Special files written by ntfs-3g are Interix files: SYSTEM-flagged
//     files whose data starts with "IntxLNK\x01" (symlink, UTF-16 target),
//     "IntxCHR\x00"/"IntxBLK\x00" (devices), or is 0 bytes (FIFO) or 1 byte
//     (socket). Windows symlinks and junctions are reparse points
//     (tags 0xA000000C, 0xA0000003), WSL ones tag 0xA000001D.
//   - Named data streams (ADS) are exposed as "user.<stream>" extended
//     attributes, as ntfs-3g's default streams_interface=xattr does.
//
// Differences from ntfs-3g, the test oracle: names are looked up exactly
// (ntfs-3g also accepts a Win32 name in another case); permissions are
// 0755/0644/0444 rather than ntfs-3g's 0777 without a user mapping; an
// absolute Windows symlink or junction ("C:\dir") reads as "/dir", relative
// to this volume's root, where ntfs-3g prefixes its mount point; a
// directory's size is its index size. Metafiles (records 0-15) are hidden
// and unreachable, as in ntfs-3g; "$RECYCLE.BIN" and "System Volume
// Information" are ordinary directories and are shown. EFS-encrypted
// streams fail to read with ErrEncrypted.
package ntfs
