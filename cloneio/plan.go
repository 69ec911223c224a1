package cloneio

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
)

// PlanOptions configure MakePlan; the zero value is filesystem-aware.
type PlanOptions struct {
	// Sector copies every byte of the disk (the layout is still recorded).
	Sector bool
	// Source names the disk in the image's metadata.
	Source string
}

// MakePlan reads the disk's partition table and filesystems and decides
// which bytes to copy: the partition table's own sectors, everything before
// the first partition (boot code, GRUB's core.img), and per partition the
// bytes its filesystem uses — or all of it when the filesystem is unknown
// or cannot list its used blocks (with a warning naming the partition).
// A fsdrivers.HeaderOnly volume (swap) keeps only its header. Free space outside partitions is not copied.
func MakePlan(r io.ReaderAt, size int64, sectorSize int, drivers []fsdrivers.Driver, opt PlanOptions) (*Plan, error) {
	d, err := disk.Open(r, size, sectorSize, drivers)
	if err != nil {
		return nil, fmt.Errorf("read partition table of %s: %w", opt.Source, err)
	}
	t := d.Table
	p := &Plan{Size: size, SectorSize: sectorSize, Info: imagefmt.DiskInfo{
		Source: opt.Source, Table: t.Kind, DiskGUID: t.DiskGUID, MBRSignature: t.MBRSignature, Mode: "used",
	}}
	if t.SectorSize > 0 {
		p.SectorSize = t.SectorSize
	}
	if p.SectorSize == 0 {
		p.SectorSize = 512
	}
	if opt.Sector {
		p.Info.Mode = "sector"
	}
	p.Info.Warnings = append(p.Info.Warnings, t.Warnings...)
	var used []Range
	for _, rr := range t.Reserved {
		used = append(used, Range{rr.Off, rr.Len})
	}
	// Everything before the first partition: MBR boot code, the post-MBR
	// gap where GRUB keeps core.img, vendor boot loaders.
	first := size
	for _, part := range d.Parts {
		if !part.Extended && t.Kind != parttable.KindNone {
			first = min(first, part.Start)
		}
	}
	if t.Kind != parttable.KindNone && first > 0 {
		used = append(used, Range{0, first})
	}
	for i := range d.Parts {
		part := &d.Parts[i]
		pi := partitionInfo(part)
		if part.Extended {
			p.Info.Partitions = append(p.Info.Partitions, pi)
			continue // its EBRs are in Reserved; its space belongs to the logical partitions
		}
		ranges, copyMode, warn := partitionRanges(part, t.Kind == parttable.KindNone)
		if warn != "" && !opt.Sector { // --sector asked for the full copy: nothing to warn about
			p.Info.Warnings = append(p.Info.Warnings, warn)
		}
		pi.Copy = copyMode
		if copyMode != "sector" {
			var n int64
			for _, r := range ranges {
				n += r.Len
			}
			pi.UsedBytes = n
		}
		if opt.Sector {
			pi.Copy = "sector"
		}
		for _, r := range ranges {
			used = append(used, Range{part.Start + r.Off, r.Len})
		}
		p.Info.Partitions = append(p.Info.Partitions, pi)
	}
	if !opt.Sector {
		p.Used = mergeRanges(used, size)
	}
	return p, nil
}

// partitionInfo is the image metadata's record of a partition: its table
// entry and the filesystem found in it. imagefmt cannot import parttable,
// so the record is imagefmt's own serialized form with the same fields and
// JSON keys; this is the one place that converts between them.
func partitionInfo(part *disk.Part) imagefmt.PartitionInfo {
	p := part.Partition
	pi := imagefmt.PartitionInfo{
		Number: p.Number, Start: p.Start, Size: p.Size, Type: p.Type, TypeName: p.TypeName,
		GUID: p.GUID, Name: p.Name, Bootable: p.Bootable, Extended: p.Extended, Logical: p.Logical,
		UsedBytes: -1,
	}
	if part.Volume != nil {
		pi.FS, pi.FSUUID, pi.FSLabel = part.Volume.Type(), part.Volume.UUID(), part.Volume.Label()
	}
	return pi
}

// partitionRanges decides what to copy of one partition.
func partitionRanges(part *disk.Part, bare bool) (ranges []fsdrivers.Range, copyMode, warning string) {
	whole := []fsdrivers.Range{{Off: 0, Len: part.Size}}
	name := fmt.Sprintf("partition %d", part.Number)
	if bare {
		name = "the disk (no partition table)"
	}
	if part.Volume == nil {
		reason := "no filesystem recognised"
		if part.ProbeErr != nil && !allNotFound(part.ProbeErr) {
			reason = part.ProbeErr.Error()
		}
		return whole, "sector", fmt.Sprintf("%s: %s; copied sector by sector", name, reason)
	}
	vol := fmt.Sprintf("%s (%s)", name, part.Volume.Type())
	var rs []fsdrivers.Range
	var err error
	mode := "used"
	switch v := part.Volume.(type) {
	case fsdrivers.HeaderOnly:
		rs, err = v.HeaderRanges()
		mode = "header"
	case fsdrivers.UsedRanger:
		rs, err = v.UsedRanges()
	default:
		return whole, "sector", vol + ": cannot list used blocks; copied sector by sector"
	}
	if err != nil {
		return whole, "sector", fmt.Sprintf("%s: %v; copied sector by sector", vol, err)
	}
	if w, ok := part.Volume.(fsdrivers.Warner); ok {
		for _, s := range w.Warnings() {
			warning += fmt.Sprintf("%s: %s; ", vol, s)
		}
	}
	// Clip to the partition: a driver must never widen what is copied.
	var out []fsdrivers.Range
	for _, r := range rs {
		s, e := max(r.Off, 0), min(r.Off+r.Len, part.Size)
		if e > s {
			out = append(out, fsdrivers.Range{Off: s, Len: e - s})
		}
	}
	return out, mode, warning
}

// allNotFound reports whether every driver just found no signature.
func allNotFound(err error) bool {
	var multi interface{ Unwrap() []error }
	if errors.As(err, &multi) {
		for _, e := range multi.Unwrap() {
			if !errors.Is(e, fsdrivers.ErrNotFound) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, fsdrivers.ErrNotFound)
}

// mergeRanges sorts, clips to [0, size) and merges overlapping or adjacent
// ranges.
func mergeRanges(rs []Range, size int64) []Range {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Off < rs[j].Off })
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		s, e := max(r.Off, 0), min(r.Off+r.Len, size)
		if e <= s {
			continue
		}
		if n := len(out); n > 0 && s <= out[n-1].Off+out[n-1].Len {
			out[n-1].Len = max(out[n-1].Off+out[n-1].Len, e) - out[n-1].Off
			continue
		}
		out = append(out, Range{s, e - s})
	}
	return out
}
