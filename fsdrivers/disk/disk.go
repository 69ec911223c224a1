package disk

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

// ErrNoPartition is wrapped by Find when the number does not exist.
var ErrNoPartition = errors.New("disk: no such partition")

// Disk is a disk's table and its parts.
type Disk struct {
	Table *parttable.Table
	Parts []Part
}

// Part is one partition, opened.
type Part struct {
	parttable.Partition
	// Volume is the filesystem a driver recognised; nil if none did (see
	// ProbeErr) and for extended containers.
	Volume fsdrivers.Volume
	// ProbeErr says why no driver recognised the partition; it joins every
	// driver's reason. Nil when Volume is set and for extended containers.
	ProbeErr error
	// Reader is a bounded view of exactly this partition's bytes.
	Reader *io.SectionReader
}

// Open reads the partition table of r (size bytes; sectorSize 0 detects it,
// see parttable.Read) and probes every partition with drivers, in order.
// A partition no driver recognises is not an error: its Part has a nil
// Volume and the reasons in ProbeErr. Only an unreadable or corrupt table
// fails Open.
func Open(r io.ReaderAt, size int64, sectorSize int, drivers []fsdrivers.Driver) (*Disk, error) {
	t, err := parttable.Read(r, size, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	d := &Disk{Table: t}
	parts := t.Partitions
	if t.Kind == parttable.KindNone {
		parts = []parttable.Partition{{Number: 1, Start: 0, Size: size}}
	}
	for _, p := range parts {
		part := Part{Partition: p, Reader: io.NewSectionReader(r, p.Start, p.Size)}
		if !p.Extended {
			part.Volume, part.ProbeErr = fsdrivers.Probe(part.Reader, p.Size, drivers)
			if part.ProbeErr != nil {
				part.ProbeErr = fmt.Errorf("disk: partition %d: %w", p.Number, part.ProbeErr)
			}
		}
		d.Parts = append(d.Parts, part)
	}
	return d, nil
}

// Find returns partition number n. The error lists the numbers that exist.
func (d *Disk) Find(n int) (*Part, error) {
	for i := range d.Parts {
		if d.Parts[i].Number == n {
			return &d.Parts[i], nil
		}
	}
	var have []string
	for _, p := range d.Parts {
		have = append(have, strconv.Itoa(p.Number))
	}
	switch {
	case len(have) == 0:
		return nil, fmt.Errorf("%w: %d (the %s table lists no partitions)", ErrNoPartition, n, d.Table.Kind)
	case d.Table.Kind == parttable.KindNone:
		return nil, fmt.Errorf("%w: %d (the disk has no partition table; the whole disk is partition 1)", ErrNoPartition, n)
	}
	return nil, fmt.Errorf("%w: %d (partitions: %s)", ErrNoPartition, n, strings.Join(have, ", "))
}
