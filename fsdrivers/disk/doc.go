// Package disk turns a whole disk into its parts: it reads the partition
// table (package parttable), gives every partition a bounded reader, and
// probes each with the filesystem drivers the caller passes in. Capture,
// mount and ls all start here, so they agree on numbering and bounds.
//
// Vocabulary:
//   - Disk: the table plus one Part per partition, in table order.
//   - Part: a parttable.Partition with its bounded Reader (an
//     io.SectionReader over exactly the partition's bytes), the opened
//     Volume if a driver recognised it, and ProbeErr if none did.
//   - A disk without a partition table (Kind "none") is one Part numbered 1
//     covering the whole disk: a bare filesystem.
//   - Extended MBR containers are listed but never probed: they hold EBRs
//     and logical partitions, not a filesystem.
package disk
