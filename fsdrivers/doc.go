// Package fsdrivers reads partition tables and filesystems from an
// io.ReaderAt: probing, used-byte maps for filesystem-aware capture, and
// read-only file trees for mount / ls / cat / extract, and writable
// filesystems for add / rm / mount --rw.
//
// Vocabulary:
//   - Driver: a value that recognises one filesystem type (ext4.Driver{},
//     fat.Driver{}, ntfs.Driver{}, swap.Driver{}); cmd passes the list in.
//   - Volume: an opened filesystem; capabilities are small interfaces found
//     by type assertion, never stubbed: UsedRanger (bytes in use),
//     HeaderOnly (scratch contents: only a header to keep, swap), Warner
//     (damage worked around), Filesystem (the io/fs-like file tree), and on
//     a Filesystem fs.ReadLinkFS (symlinks) and XattrFS (extended
//     attributes). filesystem.go has the table of who implements what.
//   - WritableDriver / WritableFS (writable.go): a driver that can also
//     write its filesystem opens it over a ReadWriterAt (the overlay's
//     section of one partition) as a WritableFS, a node-addressed tree
//     whose Sync leaves a filesystem its own checker finds clean.
//   - Range: a byte range relative to the partition's first byte.
//   - Table / Partition (package parttable): the disk's MBR or GPT layout.
//
// A partition is always handed to a driver as a bounded view
// (io.NewSectionReader), so no driver can read past its partition.
package fsdrivers
