package ntfs

import (
	"fmt"

	"github.com/dimg-project/dimg/fsdrivers"
)

// bitmapChunk is how much of $Bitmap is read at a time (8 Gi clusters per
// MiB read), so a large volume is scanned without loading the bitmap whole.
const bitmapChunk = 1 << 20

// UsedRanges returns the clusters marked in use in $Bitmap, plus the boot
// sector and the backup boot sector in the volume's last sector, which lies
// past the last cluster.
func (v *Volume) UsedRanges() ([]fsdrivers.Range, error) {
	rec, err := v.record(recBitmap)
	if err != nil {
		return nil, fmt.Errorf("ntfs: $Bitmap: %w", err)
	}
	attrs, err := v.allAttrs(rec)
	if err != nil {
		return nil, fmt.Errorf("ntfs: $Bitmap: %w", err)
	}
	s, err := v.newStream(pick(attrs, atData, ""), "$Bitmap $DATA")
	if err != nil {
		return nil, fmt.Errorf("ntfs: %w: %w", errCorrupt, err)
	}
	clusters := v.boot.clusters()
	if s.dataSize < (clusters+7)/8 {
		return nil, fmt.Errorf("ntfs: %w: $Bitmap of %d bytes for %d clusters", errCorrupt, s.dataSize, clusters)
	}
	cs := v.boot.clusterSize
	ss := v.boot.sectorSize
	rs := []fsdrivers.Range{{Off: 0, Len: ss}}
	add := func(first, n int64) {
		// The bitmap's last byte may have bits past the last cluster.
		if n = min(n, clusters-first); n <= 0 {
			return
		}
		off, l := first*cs, n*cs
		if last := &rs[len(rs)-1]; last.Off+last.Len >= off {
			last.Len = max(last.Len, off+l-last.Off)
			return
		}
		rs = append(rs, fsdrivers.Range{Off: off, Len: l})
	}
	buf := make([]byte, bitmapChunk)
	runStart := int64(-1)
	for base := int64(0); base < clusters; base += 8 * bitmapChunk {
		b := buf[:min(int64(len(buf)), (clusters-base+7)/8)]
		if _, err := s.ReadAt(b, base/8); err != nil {
			return nil, fmt.Errorf("ntfs: read $Bitmap: %w", err)
		}
		for i, c := range b {
			cl := base + int64(i)*8
			switch {
			case c == 0xff && runStart < 0:
				runStart = cl
				continue
			case c == 0xff, c == 0 && runStart < 0:
				continue
			}
			for bit := int64(0); bit < 8; bit++ {
				set := c&(1<<bit) != 0
				if set && runStart < 0 {
					runStart = cl + bit
				} else if !set && runStart >= 0 {
					add(runStart, cl+bit-runStart)
					runStart = -1
				}
			}
		}
	}
	if runStart >= 0 {
		add(runStart, clusters-runStart)
	}
	if backup := v.boot.totalSectors * ss; backup+ss <= v.size {
		if last := &rs[len(rs)-1]; last.Off+last.Len >= backup {
			last.Len = max(last.Len, backup+ss-last.Off)
		} else {
			rs = append(rs, fsdrivers.Range{Off: backup, Len: ss})
		}
	}
	return rs, nil
}
