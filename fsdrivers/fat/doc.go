// Package fat reads FAT12, FAT16 and FAT32 filesystems from an io.ReaderAt:
// probing, the map of used bytes for filesystem-aware capture, and a
// read-only file tree (fsdrivers.Filesystem).
//
// It follows Microsoft's "FAT: General Overview of On-Disk Format"
// (fatgen103). Vocabulary:
//
//   - boot sector / BPB: sector 0; the BIOS Parameter Block in it gives the
//     geometry. Its extended part (at byte 36 on FAT12/16, 64 on FAT32) holds
//     the serial number and the boot-sector label.
//   - sector: BPB_BytsPerSec bytes (512..4096). cluster: BPB_SecPerClus
//     sectors, the allocation unit of the data region. Clusters are numbered
//     from 2; the last is clusterCount+1.
//   - regions, in order: reserved (boot sector, FAT32 FSInfo and backup boot
//     sector), the FATs (BPB_NumFATs copies), the fixed root directory
//     (FAT12/16 only), the data region (clusters).
//   - FAT entry: 12, 16 or 28 bits per cluster. 0 = free; 2..max = next
//     cluster of the chain; ≥ 0x…FF8 = end of chain (EOC); 0x…FF7 = bad
//     cluster. The type (12/16/32) follows from the cluster count, as the
//     specification demands, never from the BS_FilSysType string; the one
//     exception is a volume with the FAT32 layout (BPB_FATSz16 == 0) and
//     fewer than 65,525 clusters, which is FAT32 as for Linux, dosfstools
//     and blkid (mkfs.fat -F 32 makes such volumes on small media).
//   - chain: the clusters of one file or directory, found by following FAT
//     entries from the first cluster in its directory entry. A run is a
//     stretch of consecutive cluster numbers in a chain; a file is read with
//     one ReadAt per run.
//   - directory entry: 32 bytes. A short entry carries the 8.3 name (in the
//     OEM code page, here CP850 as dosfstools and mtools default to), the
//     attributes, times, first cluster and size. Long-name (LFN, VFAT)
//     entries, 13 UTF-16 units each, precede their short entry in reverse
//     order and carry a checksum of the short name; a sequence whose order or
//     checksum does not fit is ignored and the short name is used.
//   - NT case flags: bits 0x08 / 0x10 of DIR_NTRes mark a short name whose
//     base / extension is lower case (Windows stores "readme.txt" that way
//     without long-name entries).
//
// Times in FAT are local wall-clock times without a zone; this package
// reports them as if they were UTC.
//
// Limits that bound work on hostile input: a chain is at most clusterCount
// clusters long (a longer walk is a loop, wrapping fsdrivers.ErrCorrupt); a
// directory holds at most 65,536 entries (2 MiB), as in the specification;
// a long name spans at most 20 entries; a directory whose first cluster is
// that of one of its ancestors is refused, so a damaged volume cannot make
// the tree infinitely deep.
//
// The file tree is case-insensitive, as on Windows: a path element matches a
// long name by Unicode simple folding, then an 8.3 alias ("PROGRA~1").
package fat
