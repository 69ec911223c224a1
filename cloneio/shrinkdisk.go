package cloneio

import (
	"fmt"
	"io"
	"sort"

	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

// shrunkDisk is the disk a shrinking restore or clone writes, composed on
// the fly (nothing of it is stored): the bytes before the first partition
// as the source has them, each partition's (shrunk) contents read from the
// overlay at its old place and shown at its new one, the new partition
// table's sectors over both, and zeros everywhere else.
type shrunkDisk struct {
	src   io.ReaderAt
	size  int64
	maps  []diskMap // by newOff
	table map[int64][]byte
	tOffs []int64 // keys of table, sorted
}

// diskMap shows src's [oldOff, oldOff+n) at [newOff, newOff+n).
type diskMap struct{ newOff, oldOff, n int64 }

func newShrunkDisk(src io.ReaderAt, srcSize int64, plan *ShrinkPlan, first int64, ss int) (*shrunkDisk, error) {
	d := &shrunkDisk{src: src, size: plan.TargetBytes, table: map[int64][]byte{}}
	d.maps = append(d.maps, diskMap{0, 0, first})
	place := map[int]parttable.Extent{}
	for _, p := range plan.Partitions {
		if p.Extended {
			continue // Relayout derives it from its logical partitions
		}
		d.maps = append(d.maps, diskMap{p.NewStart, p.OldStart, p.NewSize})
		place[p.Number] = parttable.Extent{Start: p.NewStart, Size: p.NewSize}
	}
	sort.Slice(d.maps, func(i, j int) bool { return d.maps[i].newOff < d.maps[j].newOff })
	for i := 1; i < len(d.maps); i++ {
		a, b := d.maps[i-1], d.maps[i]
		if a.newOff+a.n > b.newOff {
			return nil, fmt.Errorf("cloneio: shrink: the new layout overlaps at byte %d", b.newOff)
		}
	}
	if err := parttable.Relayout(src, srcSize, (*tableLayer)(d), d.size, ss, place); err != nil {
		return nil, fmt.Errorf("cloneio: shrink: %w", err)
	}
	for off := range d.table {
		d.tOffs = append(d.tOffs, off)
	}
	sort.Slice(d.tOffs, func(i, j int) bool { return d.tOffs[i] < d.tOffs[j] })
	return d, nil
}

// tableLayer collects what parttable.Relayout writes.
type tableLayer shrunkDisk

func (t *tableLayer) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > t.size {
		return 0, fmt.Errorf("cloneio: shrink: table write of %d bytes at %d past the disk's end %d", len(p), off, t.size)
	}
	t.table[off] = append([]byte(nil), p...)
	return len(p), nil
}

func (d *shrunkDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("cloneio: negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > d.size-off {
		n = int(d.size - off)
	}
	buf := p[:n]
	clear(buf)
	end := off + int64(n)
	for _, m := range d.maps {
		s, e := max(off, m.newOff), min(end, m.newOff+m.n)
		if s >= e {
			continue
		}
		if err := readFull(d.src, buf[s-off:e-off], m.oldOff+(s-m.newOff)); err != nil {
			return 0, err
		}
	}
	for _, toff := range d.tOffs {
		b := d.table[toff]
		s, e := max(off, toff), min(end, toff+int64(len(b)))
		if s < e {
			copy(buf[s-off:e-off], b[s-toff:e-toff])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readFull reads len(b) bytes at off; a short read is an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(b), off, err)
}
