package ntfs

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// ErrEncrypted is wrapped when reading an EFS-encrypted stream: its bytes
// are ciphertext only Windows can open.
var ErrEncrypted = errors.New("ntfs: encrypted stream")

// stream is one attribute's data (normally a $DATA stream), readable at
// any offset without loading it whole.
type stream struct {
	v        *Volume
	what     string // for errors: "record 42 $DATA"
	resident []byte
	runs     []run
	dataSize int64
	initSize int64
	onDisk   int64 // bytes allocated on disk, for Stat.Blocks

	compressed   bool
	unitClusters int64
	encrypted    bool

	mu    sync.Mutex
	units [2]cachedUnit // the last decompressed units, for sequential reads
	next  int
}

type cachedUnit struct {
	n    int64 // unit number, -1 if empty
	data []byte
}

// maxStreamBytes bounds any stream's size and VCN range (an exabyte; NTFS
// itself stops at 16 TiB·cluster), so offset arithmetic cannot overflow.
const maxStreamBytes = 1 << 60

// maxUnitBytes bounds a compression unit (16 clusters of 4 KiB in
// practice); compression is not defined for larger clusters.
const maxUnitBytes = 1 << 20

// newStream joins the extents of one stream (same type and name, possibly
// from several records) into a reader.
func (v *Volume) newStream(extents []attribute, what string) (*stream, error) {
	if len(extents) == 0 {
		return nil, fmt.Errorf("%s: no such stream", what)
	}
	s := &stream{v: v, what: what, units: [2]cachedUnit{{n: -1}, {n: -1}}}
	first := extents[0]
	if first.resident {
		if len(extents) > 1 {
			return nil, fmt.Errorf("%s: resident stream with %d extents", what, len(extents))
		}
		s.resident = first.value
		s.dataSize, s.initSize = int64(len(first.value)), int64(len(first.value))
		s.onDisk = (s.dataSize + 7) &^ 7
		return s, nil
	}
	sort.Slice(extents, func(i, j int) bool { return extents[i].startVCN < extents[j].startVCN })
	first = extents[0]
	next := int64(0)
	for _, e := range extents {
		if e.resident || e.startVCN != next {
			return nil, fmt.Errorf("%s: extent at VCN %d where %d was expected", what, e.startVCN, next)
		}
		if e.lastVCN >= maxStreamBytes/v.boot.clusterSize {
			return nil, fmt.Errorf("%s: extent up to VCN %d: too large", what, e.lastVCN)
		}
		s.runs = append(s.runs, e.runs...)
		next = e.lastVCN + 1
	}
	cs := v.boot.clusterSize
	clusters := v.boot.clusters()
	if next > maxStreamBytes/cs || first.dataSize > maxStreamBytes || first.initSize > maxStreamBytes {
		return nil, fmt.Errorf("%s: %d clusters, %d bytes: too large", what, next, first.dataSize)
	}
	for _, r := range s.runs {
		if r.lcn >= 0 && (r.lcn > clusters || r.length > clusters-r.lcn) {
			return nil, fmt.Errorf("%s: run at VCN %d (clusters %d+%d) lies outside the volume's %d clusters",
				what, r.vcn, r.lcn, r.length, clusters)
		}
	}
	s.dataSize, s.initSize, s.onDisk = first.dataSize, min(first.initSize, first.dataSize), first.compSize
	if s.dataSize > next*cs && first.flags&(attrFlagCompressed|attrFlagSparse) == 0 {
		return nil, fmt.Errorf("%s: %d bytes of data in %d clusters", what, s.dataSize, next)
	}
	s.encrypted = first.flags&attrFlagEncrypted != 0
	if first.flags&attrFlagCompressed != 0 && first.compUnit != 0 {
		if first.compUnit > 16 || cs<<first.compUnit > maxUnitBytes {
			return nil, fmt.Errorf("%s: compression unit of 2^%d clusters of %d bytes", what, first.compUnit, cs)
		}
		s.compressed = true
		s.unitClusters = 1 << first.compUnit
	}
	return s, nil
}

// ReadAt reads the stream; bytes past the initialized size and in sparse
// runs read as zeros.
func (s *stream) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ntfs: %s: negative offset %d", s.what, off)
	}
	if off >= s.dataSize {
		return 0, io.EOF
	}
	if s.encrypted {
		return 0, fmt.Errorf("%w: %s", ErrEncrypted, s.what)
	}
	n := int(min(int64(len(p)), s.dataSize-off))
	if err := s.fill(p[:n], off); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *stream) fill(p []byte, off int64) error {
	if s.resident != nil || s.runs == nil {
		clear(p)
		if off < int64(len(s.resident)) {
			copy(p, s.resident[off:])
		}
		return nil
	}
	cs := s.v.boot.clusterSize
	for done := 0; done < len(p); {
		pos := off + int64(done)
		if pos >= s.initSize {
			clear(p[done:])
			return nil
		}
		lim := min(int64(len(p)-done), s.initSize-pos)
		if s.compressed {
			ub := s.unitClusters * cs
			u := pos / ub
			data, err := s.unit(u)
			if err != nil {
				return err
			}
			k := min(lim, (u+1)*ub-pos)
			if data == nil {
				clear(p[done : done+int(k)])
			} else {
				copy(p[done:done+int(k)], data[pos-u*ub:])
			}
			done += int(k)
			continue
		}
		i := findRun(s.runs, pos/cs)
		if i < 0 {
			return fmt.Errorf("ntfs: %s: %w: offset %d is not mapped by the runlist", s.what, errCorrupt, pos)
		}
		r := s.runs[i]
		k := min(lim, (r.vcn+r.length)*cs-pos)
		dst := p[done : done+int(k)]
		if r.lcn < 0 {
			clear(dst)
		} else if err := s.v.readDisk(dst, r.lcn*cs+pos-r.vcn*cs); err != nil {
			return fmt.Errorf("ntfs: %s: %w", s.what, err)
		}
		done += int(k)
	}
	return nil
}

// unit returns compression unit u decompressed, or nil if it is all zeros.
func (s *stream) unit(u int64) ([]byte, error) {
	s.mu.Lock()
	for _, c := range s.units {
		if c.n == u {
			s.mu.Unlock()
			return c.data, nil
		}
	}
	s.mu.Unlock()

	cs := s.v.boot.clusterSize
	uc := s.unitClusters
	// The unit's clusters in VCN order: allocated ones are data, sparse or
	// unmapped ones are filler.
	type seg struct{ lcn, n int64 }
	var segs []seg
	allocated := int64(0)
	for vcn := u * uc; vcn < (u+1)*uc; {
		i := findRun(s.runs, vcn)
		if i < 0 {
			break // the runlist of a compressed stream may stop early
		}
		r := s.runs[i]
		n := min(r.vcn+r.length, (u+1)*uc) - vcn
		if r.lcn >= 0 {
			segs = append(segs, seg{r.lcn + vcn - r.vcn, n})
			allocated += n
		}
		vcn += n
	}
	if allocated == 0 {
		return nil, nil
	}
	raw := make([]byte, allocated*cs)
	at := int64(0)
	for _, g := range segs {
		if err := s.v.readDisk(raw[at:at+g.n*cs], g.lcn*cs); err != nil {
			return nil, fmt.Errorf("ntfs: %s: unit %d: %w", s.what, u, err)
		}
		at += g.n * cs
	}
	data := raw
	if allocated < uc {
		data = make([]byte, uc*cs)
		if err := lznt1Decompress(data, raw); err != nil {
			return nil, fmt.Errorf("ntfs: %s: unit %d: %w: %v", s.what, u, errCorrupt, err)
		}
	}
	s.mu.Lock()
	s.units[s.next] = cachedUnit{n: u, data: data}
	s.next = (s.next + 1) % len(s.units)
	s.mu.Unlock()
	return data, nil
}
