package source

import (
	"fmt"
	"strings"

	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

// readDisk reads the partition table once; no filesystem is probed yet.
// The caller holds s.mu.
func (s *Source) readDisk() (*fsdisk.Disk, error) {
	if s.disk == nil && s.diskErr == nil {
		d, err := fsdisk.Open(s.b.ReaderAt, s.b.Size, s.b.SectorSize, nil)
		if err != nil {
			s.diskErr = fmt.Errorf("%s: %w", s.b.Name, err)
			return nil, s.diskErr
		}
		// Opened with no drivers, every partition reads "unknown
		// filesystem" until probe looks at it.
		for i := range d.Parts {
			d.Parts[i].ProbeErr = nil
		}
		s.disk, s.probed = d, make([]bool, len(d.Parts))
	}
	return s.disk, s.diskErr
}

// probe opens the filesystem of the i-th partition, once. The caller
// holds s.mu.
func (s *Source) probe(i int) {
	p := &s.disk.Parts[i]
	if s.probed[i] || p.Extended {
		return
	}
	s.probed[i] = true
	p.Volume, p.ProbeErr = fsdrivers.Probe(p.Reader, p.Size, s.drivers)
	if p.ProbeErr != nil {
		p.ProbeErr = fmt.Errorf("partition %d: %w", p.Number, p.ProbeErr)
	}
}

// Table reads the partition table (once) without probing any filesystem.
func (s *Source) Table() (*parttable.Table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.readDisk()
	if err != nil {
		return nil, err
	}
	return d.Table, nil
}

// Layout returns the partition table and every partition with its
// filesystem probed. A disk without a table is one partition, number 1.
// The Disk is shared: callers must not modify it.
func (s *Source) Layout() (*fsdisk.Disk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.readDisk()
	if err != nil {
		return nil, err
	}
	for i := range d.Parts {
		s.probe(i)
	}
	return d, nil
}

// Partition returns partition number n with its filesystem probed (and
// no other partition's). The error wraps fsdisk.ErrNoPartition and lists
// the numbers that exist.
func (s *Source) Partition(n int) (*fsdisk.Part, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.readDisk()
	if err != nil {
		return nil, err
	}
	for i := range d.Parts {
		if d.Parts[i].Number == n {
			s.probe(i)
			return &d.Parts[i], nil
		}
	}
	_, err = d.Find(n)
	return nil, fmt.Errorf("%s: %w", s.b.Name, err)
}

// Trees lists the partitions whose filesystem has files to browse.
func (s *Source) Trees() ([]*fsdisk.Part, error) {
	d, err := s.Layout()
	if err != nil {
		return nil, err
	}
	var out []*fsdisk.Part
	for i := range d.Parts {
		if HasFiles(&d.Parts[i]) {
			out = append(out, &d.Parts[i])
		}
	}
	return out, nil
}

// HasFiles reports whether a probed partition's filesystem can be browsed.
func HasFiles(p *fsdisk.Part) bool {
	_, ok := p.Volume.(fsdrivers.Filesystem)
	return ok
}

// Describe names a probed partition's contents for messages:
// `ext4 "root"`, "swap", "no filesystem recognised".
func Describe(p *fsdisk.Part) string {
	switch {
	case p.Extended:
		return "extended partition"
	case p.Volume == nil:
		return "no filesystem recognised"
	case p.Volume.Label() != "":
		return fmt.Sprintf("%s %q", p.Volume.Type(), p.Volume.Label())
	}
	return p.Volume.Type()
}

// partitionList is `1 (fat32 "EFI"), 2 (ext4 "root"), 3 (swap)`.
func partitionList(d *fsdisk.Disk) string {
	var s []string
	for i := range d.Parts {
		p := &d.Parts[i]
		s = append(s, fmt.Sprintf("%d (%s)", p.Number, Describe(p)))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
