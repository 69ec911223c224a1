// Package parttable reads and rewrites MBR and GPT partition tables over an
// io.ReaderAt.
//
// Vocabulary:
//   - LBA: a logical block address, counted in sectors of the table's
//     SectorSize (512, or 4096 on "4Kn" disks). Everything exported is in
//     bytes; LBAs stay inside the package.
//   - MBR: the classic table in sector 0: four primary entries, one of which
//     may be an extended container (type 0x05, 0x0F or 0x85) holding a chain
//     of EBRs (extended boot records), each describing one logical partition
//     and a link to the next EBR. Logical partitions are numbered 5, 6, ...
//     in chain order, as Linux numbers them.
//   - Protective MBR: an MBR whose entry of type 0xEE says "this disk is GPT".
//   - GPT: a header at LBA 1 and an entry array after it (primary), and a
//     mirror of both at the disk's end (backup: entries, then the header in
//     the last LBA). Both carry CRC32s; a damaged primary is replaced by the
//     backup and the table says so in Warnings.
//   - Reserved: the byte ranges that are the table itself, to be copied
//     verbatim by capture.
//   - Kind "none": no table; the whole disk is one region (a bare filesystem).
//
// The writers (RelocateGPT, GrowLastPartition, NewGUIDs) exist for restore
// and clone onto a different disk: they rewrite only table sectors.
package parttable
