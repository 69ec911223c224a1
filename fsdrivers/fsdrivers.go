package fsdrivers

import (
	"errors"
	"fmt"
	"io"
)

// ErrNotFound is wrapped by a Driver's Open when the bytes do not carry that
// driver's signature at all (as opposed to a damaged filesystem of that type).
var ErrNotFound = errors.New("fsdrivers: no filesystem signature")

// ErrCorrupt is wrapped when a structure fails validation (bad checksum,
// out-of-range pointer, loop in a chain).
var ErrCorrupt = errors.New("fsdrivers: corrupt filesystem")

// Driver recognises and opens one filesystem type over a partition.
// Drivers are plain values passed in by the caller (cmd); nothing registers
// itself in init().
type Driver interface {
	// Name is the short type name: "ext4", "fat", "ntfs", "swap".
	Name() string
	// Open probes r (one partition, size bytes) and opens the filesystem.
	// It returns an error wrapping ErrNotFound when the signature is absent.
	Open(r io.ReaderAt, size int64) (Volume, error)
}

// Volume is an opened filesystem. Everything beyond identification is an
// optional capability found by type assertion (see filesystem.go):
// UsedRanger, HeaderOnly, Warner, Filesystem.
type Volume interface {
	// Type is the precise type: "ext2", "ext3", "ext4", "fat12", "fat16",
	// "fat32", "ntfs", "swap".
	Type() string
	// UUID is the filesystem's UUID or serial as its own tools print it
	// (blkid style), "" if it has none.
	UUID() string
	// Label is the volume label, "" if none.
	Label() string
}

// Range is a byte range [Off, Off+Len) relative to the start of the partition.
type Range struct {
	Off, Len int64
}

// Probe tries each driver in order and returns the first volume that opens.
// When none does, the error joins every driver's reason so "unknown
// filesystem" explains itself.
func Probe(r io.ReaderAt, size int64, drivers []Driver) (Volume, error) {
	var errs []error
	for _, d := range drivers {
		v, err := d.Open(r, size)
		if err == nil {
			return v, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", d.Name(), err))
	}
	return nil, fmt.Errorf("fsdrivers: unknown filesystem: %w", errors.Join(errs...))
}
