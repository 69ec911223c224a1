package fat

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Shrinking a FAT volume in place (restore onto a smaller disk).
//
// The reserved region and the FATs stay where they are and keep their
// size: a FAT larger than its cluster count needs is valid (the entries
// past the last cluster are zero), and keeping it means cluster 2 does not
// move, so only the clusters past the new end are moved, not every one.
// Those are copied into free clusters below the new end, and every
// reference to them is rewritten: the FAT entries that chain to them, the
// directory entries (including "." and "..") that start at them, and a
// FAT32 root cluster. Then the total sector count of the boot sector (and
// of the FAT32 backup boot sector) and the FSInfo free count are set. The
// FAT type follows from the cluster count, so a size whose count would
// change it (FAT32 under 65,525 clusters, FAT16 under 4,085) is refused:
// MinSize never goes below it.

// ReadWriterAt is a volume that can be read and written in place.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// MinSize is the smallest size Resize accepts for the volume in r (size
// bytes): the metadata, the clusters in use plus 2% (and 16) to spare, and
// at least the cluster count that keeps the volume's FAT type.
func MinSize(r io.ReaderAt, size int64) (int64, error) {
	g, err := readBootSector(r, size)
	if err != nil {
		return 0, err
	}
	fat, err := loadFAT(r, g)
	if err != nil {
		return 0, err
	}
	var used int64
	for c := uint32(2); c <= g.maxCluster(); c++ {
		if getEntry(fat, c, g.bits) != 0 {
			used++
		}
	}
	n := max(used+used/50+16, typeMinClusters(g.bits))
	n = min(n, int64(g.clusterCount))
	return g.dataOffset + n*g.clusterSize, nil
}

// typeMinClusters is the fewest clusters a volume of this FAT type may
// have without being read as another type.
func typeMinClusters(bits int) int64 {
	switch bits {
	case 32:
		return fat16Limit
	case 16:
		return fat12Limit
	}
	return 1
}

func loadFAT(r io.ReaderAt, g *geometry) ([]byte, error) {
	fat := make([]byte, g.fatNeed())
	off := g.fatOffset + int64(g.activeFAT)*g.fatBytes
	if err := readFull(r, fat, off); err != nil {
		return nil, fmt.Errorf("fat: read FAT at %d: %w", off, err)
	}
	return fat, nil
}

func getEntry(fat []byte, c uint32, bits int) uint32 {
	return decodeEntry(fat, entryByte(bits, c), c, bits)
}

func setEntry(fat []byte, c uint32, bits int, v uint32) {
	le := binary.LittleEndian
	off := entryByte(bits, c)
	switch bits {
	case 12:
		old := le.Uint16(fat[off:])
		if c&1 == 1 {
			le.PutUint16(fat[off:], old&0x000F|uint16(v&0x0FFF)<<4)
		} else {
			le.PutUint16(fat[off:], old&0xF000|uint16(v&0x0FFF))
		}
	case 16:
		le.PutUint16(fat[off:], uint16(v))
	default:
		// The top 4 bits are reserved: keep them.
		le.PutUint32(fat[off:], le.Uint32(fat[off:])&0xF0000000|v&0x0FFFFFFF)
	}
}

// Resize shrinks the FAT volume in rw (size bytes) to newSize bytes (at
// least MinSize; not more than its present size). The volume must be
// consistent (fsck.fat clean): a cross-linked chain would be moved twice.
func Resize(rw ReadWriterAt, size, newSize int64) error {
	g, err := readBootSector(rw, size)
	if err != nil {
		return err
	}
	bs := make([]byte, g.sectorSize)
	if err := readFull(rw, bs, 0); err != nil {
		return fmt.Errorf("fat: resize: read boot sector: %w", err)
	}
	newTot := newSize / g.sectorSize
	if newTot*g.sectorSize > g.totalBytes {
		return fmt.Errorf("fat: resize: %d bytes is larger than the volume (%d bytes); only shrinking is supported", newSize, g.totalBytes)
	}
	if newTot*g.sectorSize <= g.dataOffset {
		return fmt.Errorf("fat: resize: %d bytes leaves no room for clusters after the metadata (%d bytes)", newSize, g.dataOffset)
	}
	newClusters := (newTot*g.sectorSize - g.dataOffset) / g.clusterSize
	if newClusters < typeMinClusters(g.bits) {
		return fmt.Errorf("fat: resize: %d clusters would make this FAT%d volume read as another FAT type (it needs at least %d); the smallest size is %d bytes",
			newClusters, g.bits, typeMinClusters(g.bits), g.dataOffset+typeMinClusters(g.bits)*g.clusterSize)
	}
	fat, err := loadFAT(rw, g)
	if err != nil {
		return err
	}
	oldMax, newMax := g.maxCluster(), uint32(newClusters)+1

	// Pair every used cluster past the new end with a free one below it.
	remap := map[uint32]uint32{}
	next := uint32(2)
	for h := newMax + 1; h <= oldMax; h++ {
		v := getEntry(fat, h, g.bits)
		if v == 0 || g.bad(v) {
			continue // free, or a bad cluster that simply goes away
		}
		for next <= newMax && getEntry(fat, next, g.bits) != 0 {
			next++
		}
		if next > newMax {
			return fmt.Errorf("fat: resize: the data does not fit in %d clusters", newClusters)
		}
		remap[h] = next
		setEntry(fat, next, g.bits, 0x0FFFFFF7&0x0FFFFFFF) // reserve it; its value is set below
		next++
	}
	mapc := func(v uint32) uint32 {
		if n, ok := remap[v]; ok {
			return n
		}
		return v
	}
	buf := make([]byte, g.clusterSize)
	for h, l := range remap {
		if err := readFull(rw, buf, g.clusterOffset(h)); err != nil {
			return fmt.Errorf("fat: resize: read cluster %d: %w", h, err)
		}
		if _, err := rw.WriteAt(buf, g.clusterOffset(l)); err != nil {
			return fmt.Errorf("fat: resize: write cluster %d: %w", l, err)
		}
		setEntry(fat, l, g.bits, getEntry(fat, h, g.bits))
	}
	for c := uint32(2); c <= newMax; c++ {
		v := getEntry(fat, c, g.bits)
		if v >= 2 && v <= oldMax && !g.bad(v) && !g.eoc(v) {
			setEntry(fat, c, g.bits, mapc(v))
		}
	}
	for c := newMax + 1; c <= oldMax; c++ {
		setEntry(fat, c, g.bits, 0)
	}
	g.clusterCount = uint32(newClusters)

	// Directory entries: walked through the new FAT, from the new places.
	le := binary.LittleEndian
	if g.bits == 32 {
		g.rootCluster = mapc(g.rootCluster)
		le.PutUint32(bs[44:], le.Uint32(bs[44:])&0xF0000000|g.rootCluster)
	}
	if len(remap) > 0 {
		if err := fixDirs(rw, g, fat, mapc); err != nil {
			return err
		}
	}

	// The FATs, then the boot sector: a crash in between leaves the old
	// size with every moved cluster still in place too.
	for i := 0; i < g.numFATs; i++ {
		if _, err := rw.WriteAt(fat, g.fatOffset+int64(i)*g.fatBytes); err != nil {
			return fmt.Errorf("fat: resize: write FAT %d: %w", i+1, err)
		}
	}
	if g.bits != 32 && newTot < 0x10000 && le.Uint16(bs[19:]) != 0 {
		le.PutUint16(bs[19:], uint16(newTot))
	} else {
		le.PutUint16(bs[19:], 0)
		le.PutUint32(bs[32:], uint32(newTot))
	}
	if _, err := rw.WriteAt(bs, 0); err != nil {
		return fmt.Errorf("fat: resize: write boot sector: %w", err)
	}
	if g.bits == 32 {
		return fixFAT32Reserved(rw, g, bs, fat)
	}
	return nil
}

// fixFAT32Reserved writes the backup boot sector and both FSInfo sectors
// for the new size.
func fixFAT32Reserved(rw ReadWriterAt, g *geometry, bs, fat []byte) error {
	le := binary.LittleEndian
	var free uint32
	for c := uint32(2); c <= g.maxCluster(); c++ {
		if getEntry(fat, c, 32) == 0 {
			free++
		}
	}
	reserved := int64(le.Uint16(bs[14:]))
	backup := int64(le.Uint16(bs[50:]))
	sectors := []int64{int64(g.fsInfoSector)}
	if backup > 0 && backup < reserved && backup != 0xFFFF {
		if _, err := rw.WriteAt(bs, backup*g.sectorSize); err != nil {
			return fmt.Errorf("fat: resize: write backup boot sector: %w", err)
		}
		sectors = append(sectors, backup+int64(g.fsInfoSector))
	}
	sec := make([]byte, g.sectorSize)
	for _, s := range sectors {
		if s <= 0 || s >= reserved {
			continue
		}
		if err := readFull(rw, sec, s*g.sectorSize); err != nil {
			return fmt.Errorf("fat: resize: read FSInfo: %w", err)
		}
		if le.Uint32(sec[0:]) != 0x41615252 || le.Uint32(sec[484:]) != 0x61417272 {
			continue // no FSInfo there
		}
		le.PutUint32(sec[488:], free)
		le.PutUint32(sec[492:], 0xFFFFFFFF) // next free: unknown
		if _, err := rw.WriteAt(sec, s*g.sectorSize); err != nil {
			return fmt.Errorf("fat: resize: write FSInfo: %w", err)
		}
	}
	return nil
}

// fixDirs rewrites the start clusters of every directory entry that points
// at a moved cluster, walking the tree from the root through fat.
func fixDirs(rw ReadWriterAt, g *geometry, fat []byte, mapc func(uint32) uint32) error {
	seen := map[uint32]bool{}
	var walk func(first uint32, fixed bool) error
	walk = func(first uint32, fixed bool) error {
		// A directory's data: the fixed FAT12/16 root, or its chain.
		type piece struct{ off, n int64 }
		var pieces []piece
		if fixed {
			pieces = []piece{{g.rootOffset, g.rootBytes}}
		} else {
			for c, steps := first, int64(0); c >= 2 && c <= g.maxCluster(); steps++ {
				if seen[c] {
					return nil // a loop or a second visit: fsck's business, not ours
				}
				if steps > int64(g.clusterCount) {
					return fmt.Errorf("fat: resize: directory chain from cluster %d loops", first)
				}
				seen[c] = true
				pieces = append(pieces, piece{g.clusterOffset(c), g.clusterSize})
				v := getEntry(fat, c, g.bits)
				if g.eoc(v) || v < 2 || g.bad(v) {
					break
				}
				c = v
			}
		}
		var subdirs []uint32
		for _, p := range pieces {
			b := make([]byte, p.n)
			if err := readFull(rw, b, p.off); err != nil {
				return fmt.Errorf("fat: resize: read directory at %d: %w", p.off, err)
			}
			changed, end := false, false
			for o := 0; o+32 <= len(b); o += 32 {
				e := b[o : o+32]
				if e[0] == 0 {
					end = true
					break
				}
				if e[0] == 0xE5 || e[11]&0x0F == 0x0F || e[11]&0x08 != 0 {
					continue // deleted, long-name part, volume label
				}
				cl := uint32(binary.LittleEndian.Uint16(e[26:]))
				if g.bits == 32 {
					cl |= uint32(binary.LittleEndian.Uint16(e[20:])) << 16
				}
				if n := mapc(cl); n != cl {
					binary.LittleEndian.PutUint16(e[26:], uint16(n))
					if g.bits == 32 {
						binary.LittleEndian.PutUint16(e[20:], uint16(n>>16))
					}
					changed, cl = true, n
				}
				if e[11]&0x10 != 0 && e[0] != '.' && cl >= 2 {
					subdirs = append(subdirs, cl)
				}
			}
			if changed {
				if _, err := rw.WriteAt(b, p.off); err != nil {
					return fmt.Errorf("fat: resize: write directory at %d: %w", p.off, err)
				}
			}
			if end {
				break
			}
		}
		for _, d := range subdirs {
			if err := walk(d, false); err != nil {
				return err
			}
		}
		return nil
	}
	if g.bits == 32 {
		return walk(g.rootCluster, false)
	}
	return walk(0, true)
}
