// Package fat reads FAT12, FAT16 and FAT32 filesystems from an io.ReaderAt:
// probing, the map of used bytes for filesystem-aware capture, and a
// read-only file tree (fsdrivers.Filesystem); and writes them
// (fsdrivers.WritableDriver: Driver.OpenWritable).
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
//
// # Writing
//
// OpenWritable gives a node-addressed fsdrivers.WritableFS (write.go,
// wops.go, wnode.go, wfat.go, shortname.go). It writes what Linux's vfat
// writes, so that fsck.fat -n finds the volume clean after every Sync:
//
//   - names: long-name entries with the alias's checksum, and 8.3 aliases
//     made as vfat and mtools make them (shortname.go); a name valid as 8.3
//     gets no long name, lower-case parts flagged in DIR_NTRes. Trailing
//     dots are dropped from new names, as vfat does.
//   - every FAT copy is written; FAT32's FSInfo free count and next-free
//     hint (FSI_Free_Count, FSI_Nxt_Free) are kept right. The boot sector,
//     its label and the root's volume-label entry are never changed, nor
//     the dirty marks (the boot sector's state bit, FAT16/32 entry 1's
//     clean-shutdown and no-error bits): a volume opened clean stays clean
//     after every Sync, and nothing is left half-written between Syncs.
//   - new directories get "." and ".." (".." of a directory in the root is
//     cluster 0, on FAT32 too) and grow by zeroed clusters up to 65,536
//     entries; the FAT12/16 fixed root never grows (ENOSPC when full).
//   - an empty file has first cluster 0; files grow into zeroed clusters
//     (FAT has no holes) allocated after their last cluster where free,
//     else from the next-free hint; truncation frees clusters.
//   - times: creation (10 ms), modification (2 s), access (a date), as
//     wall-clock time in UTC; the change time reported is the modification
//     time. Owner is uid/gid 0: chown to anything else is EPERM (as vfat);
//     mode maps to the read-only attribute (no write bit set) and nothing
//     else. Symbolic and hard links, device nodes, FIFOs: EPERM; xattrs:
//     EOPNOTSUPP (set) and none listed.
//   - node numbers: an entry present at open keeps the number the reader
//     gives it (the partition offset of its short entry); new entries are
//     numbered from 2^48. A node keeps its number across renames. A file
//     unlinked while held (Hold) stays readable and writable; its clusters
//     are written as free in the FATs on disk (FAT has no orphan list, and
//     fsck must find nothing lost) but stay reserved in memory until its
//     last Release.
//   - a volume marked dirty (not cleanly unmounted, or disk errors
//     recorded), whose FAT copies disagree, whose FAT holds values that are
//     neither cluster numbers nor marks, whose root cannot be read, or with
//     FAT32 mirroring disabled is refused (fsdrivers.ErrReadOnly), naming
//     why: repairing it is fsck.fat's call.
//
// Memory: FAT12/16 tables are held whole; FAT32 tables in 64 KiB pages, at
// most 256 unchanged ones cached, changed ones held until Sync. Loaded
// directories (at most 2 MiB each) stay in memory while the WritableFS is
// open: an edit touches the directories on its paths. One mutex serialises
// all operations.
package fat
