package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sort"
)

const (
	direntHdr     = 8
	direntTailLen = 12
	direntTailFT  = 0xDE
	dirReadChunk  = 256 << 10 // linear scans read this much per ReadAt
)

// dirLoc names a directory block (or an inline region, blk < 0) in
// errors; it is formatted only when an error is built.
type dirLoc struct {
	ino uint32
	blk int64
}

func (l dirLoc) String() string {
	if l.blk < 0 {
		return fmt.Sprintf("inline directory inode %d", l.ino)
	}
	return fmt.Sprintf("directory inode %d block %d", l.ino, l.blk)
}

// dirent is one live directory entry; name aliases the block buffer.
type dirent struct {
	ino   uint32
	name  []byte
	ftype uint8
}

// recLen decodes rec_len; 64 KiB blocks need 17 bits, kept in the low two.
func (v *Volume) recLen(x uint16) int {
	if v.blockSize < 65536 {
		return int(x)
	}
	if x == 65535 || x == 0 {
		return 65536
	}
	return int(x&65532) | int(x&3)<<16
}

// parseDirents calls fn for each entry with a non-zero inode in buf, a
// directory block or an inline-data region. It stops early when fn returns
// false. Malformed records are corruption (the kernel's checks: rec_len at
// least 8, 4-aligned, within the buffer, name fits; inode in range).
func (v *Volume) parseDirents(buf []byte, where dirLoc, fn func(d dirent) bool) error {
	le := binary.LittleEndian
	ftypes := v.sb.incompat&incompatFiletype != 0
	for pos := 0; pos < len(buf); {
		if pos+direntHdr > len(buf) {
			return corruptf("%s: directory entry at byte %d truncated", where, pos)
		}
		ino := le.Uint32(buf[pos:])
		rl := v.recLen(le.Uint16(buf[pos+4:]))
		nameLen := int(buf[pos+6])
		var ft uint8
		if ftypes {
			ft = buf[pos+7]
		} else {
			nameLen = int(le.Uint16(buf[pos+6:]))
		}
		if rl < direntHdr || rl%4 != 0 || rl > len(buf)-pos || direntHdr+nameLen > rl {
			return corruptf("%s: directory entry at byte %d: rec_len %d name_len %d", where, pos, rl, nameLen)
		}
		if ino != 0 && nameLen > 0 {
			if ino > v.sb.inodesCount {
				return corruptf("%s: directory entry at byte %d names inode %d", where, pos, ino)
			}
			if !fn(dirent{ino: ino, name: buf[pos+direntHdr : pos+direntHdr+nameLen], ftype: ft}) {
				return nil
			}
		}
		pos += rl
	}
	return nil
}

// dirBlocks is the number of blocks a directory spans, bounded by the
// filesystem size so a hostile i_size cannot make a scan run forever.
func (v *Volume) dirBlocks(dir *inode) (uint64, error) {
	if dir.size > v.sb.blocksCount<<v.blockBits {
		return 0, corruptf("directory inode %d claims %d bytes", dir.num, dir.size)
	}
	return (dir.size + uint64(v.blockSize) - 1) >> v.blockBits, nil
}

func (v *Volume) isDx(dir *inode) bool { return dir.flags&flagIndex != 0 }

// isDxBlock says whether block lblk of an htree directory is an index block:
// the root, or a node (one empty entry spanning the block).
func (v *Volume) isDxBlock(dir *inode, lblk uint64, b []byte) bool {
	if !v.isDx(dir) {
		return false
	}
	return lblk == 0 || binary.LittleEndian.Uint32(b) == 0 && v.recLen(binary.LittleEndian.Uint16(b[4:])) == len(b)
}

// verifyLeaf checks a leaf block's tail checksum (metadata_csum).
func (v *Volume) verifyLeaf(dir *inode, lblk uint64, b []byte) error {
	if !v.metaCsum {
		return nil
	}
	le := binary.LittleEndian
	t := b[len(b)-direntTailLen:]
	if le.Uint32(t) != 0 || le.Uint16(t[4:]) != direntTailLen || t[6] != 0 || t[7] != direntTailFT {
		return corruptf("directory inode %d block %d: no checksum tail", dir.num, lblk)
	}
	if got, want := crc32c(dir.seed, b[:len(b)-direntTailLen]), le.Uint32(t[8:]); got != want {
		return corruptf("directory inode %d block %d: checksum %#08x, computed %#08x", dir.num, lblk, want, got)
	}
	return nil
}

// verifyDx checks an htree index block's checksum, kept in a dx_tail after
// the limit entries: crc32c over the header and used entries, then the tail
// with its checksum as zero.
func (v *Volume) verifyDx(dir *inode, lblk uint64, b []byte, countOff int) error {
	if !v.metaCsum {
		return nil
	}
	le := binary.LittleEndian
	limit, count := int(le.Uint16(b[countOff:])), int(le.Uint16(b[countOff+2:]))
	tail := countOff + limit*8
	if count > limit || tail+8 > len(b) {
		return corruptf("directory inode %d htree block %d: no room for the checksum", dir.num, lblk)
	}
	c := crc32c(dir.seed, b[:countOff+count*8])
	c = crc32c(c, b[tail:tail+4])
	c = crc32c(c, []byte{0, 0, 0, 0})
	if want := le.Uint32(b[tail+4:]); c != want {
		return corruptf("directory inode %d htree block %d: checksum %#08x, computed %#08x", dir.num, lblk, want, c)
	}
	return nil
}

// scanDir calls fn for every live entry of dir (including "." and ".."),
// reading contiguous directory blocks in large chunks and verifying each
// block's checksum. fn returning false stops the scan.
func (v *Volume) scanDir(dir *inode, fn func(d dirent) bool) error {
	if dir.flags&flagEncrypt != 0 {
		return fmt.Errorf("ext4: directory inode %d is encrypted: %w", dir.num, ErrUnsupported)
	}
	if dir.flags&flagInlineData != 0 {
		return v.scanInlineDir(dir, fn)
	}
	nblocks, err := v.dirBlocks(dir)
	if err != nil {
		return err
	}
	stop := false
	wrap := func(d dirent) bool {
		if !fn(d) {
			stop = true
		}
		return !stop
	}
	chunkBlocks := uint64(dirReadChunk >> v.blockBits)
	buf := make([]byte, min(nblocks, chunkBlocks)<<v.blockBits)
	var hint run
	for lblk := uint64(0); lblk < nblocks && !stop; {
		r := hint
		if !r.contains(lblk) {
			if r, err = v.mapBlock(dir, lblk); err != nil {
				return fmt.Errorf("ext4: directory inode %d: %w", dir.num, err)
			}
			hint = r
		}
		if r.kind != runData {
			return corruptf("directory inode %d: hole at block %d", dir.num, lblk)
		}
		n := min(r.lblk+r.n-lblk, nblocks-lblk, chunkBlocks)
		chunk := buf[:n<<v.blockBits]
		if err := v.readFull(chunk, int64(r.phys+(lblk-r.lblk))<<v.blockBits); err != nil {
			return fmt.Errorf("ext4: directory inode %d: read block %d: %w", dir.num, lblk, err)
		}
		for i := uint64(0); i < n && !stop; i++ {
			b := chunk[i<<v.blockBits : (i+1)<<v.blockBits]
			where := dirLoc{dir.num, int64(lblk + i)}
			if v.isDxBlock(dir, lblk+i, b) {
				if lblk+i == 0 {
					// dx_root: "." and ".." precede the index.
					if err := v.verifyDx(dir, 0, b, dxRootCountOff); err != nil {
						return err
					}
					dot, dotdot, err := v.dxRootDots(dir, b)
					if err != nil {
						return err
					}
					if !wrap(dirent{ino: dot, name: []byte("."), ftype: 2}) || !wrap(dirent{ino: dotdot, name: []byte(".."), ftype: 2}) {
						return nil
					}
				} else if err := v.verifyDx(dir, lblk+i, b, dxNodeCountOff); err != nil {
					return err
				}
				continue
			}
			if err := v.verifyLeaf(dir, lblk+i, b); err != nil {
				return err
			}
			if err := v.parseDirents(b, where, wrap); err != nil {
				return err
			}
		}
		lblk += n
	}
	return nil
}

// scanInlineDir walks an inline directory: i_block starts with the parent's
// inode number (no "." or ".." entries are stored), then entries fill the
// rest of i_block and the system.data value.
func (v *Volume) scanInlineDir(dir *inode, fn func(d dirent) bool) error {
	head, rest, err := v.inlineParts(dir)
	if err != nil {
		return err
	}
	parent := binary.LittleEndian.Uint32(head)
	if !fn(dirent{ino: dir.num, name: []byte("."), ftype: 2}) || !fn(dirent{ino: parent, name: []byte(".."), ftype: 2}) {
		return nil
	}
	stop := false
	wrap := func(d dirent) bool {
		stop = !fn(d)
		return !stop
	}
	where := dirLoc{dir.num, -1}
	if err := v.parseDirents(head[4:], where, wrap); err != nil || stop {
		return err
	}
	if len(rest) > 0 {
		return v.parseDirents(rest, where, wrap)
	}
	return nil
}

// lookup finds name in dir and returns its inode number. It uses the htree
// index when there is one, touching a handful of blocks.
func (v *Volume) lookup(dir *inode, name string) (uint32, error) {
	switch name {
	case ".":
		return dir.num, nil
	case "..":
		return v.parent(dir)
	}
	if v.isDx(dir) && dir.flags&(flagInlineData|flagCasefold|flagEncrypt) == 0 && v.sb.compat&compatDirIndex != 0 {
		n, err := v.dxLookup(dir, []byte(name))
		if !errors.Is(err, errBadDx) {
			return n, err
		}
		// A malformed (not checksum-failed) index: the kernel falls back
		// to a linear scan, and so do we.
	}
	var found uint32
	err := v.scanDir(dir, func(d dirent) bool {
		if string(d.name) == name {
			found = d.ino
			return false
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if found == 0 {
		return 0, fs.ErrNotExist
	}
	return found, nil
}

// htree layout.
const (
	dxRootInfoOff  = 0x18 // after the "." (12 bytes) and ".." headers
	dxRootInfoLen  = 8
	dxRootCountOff = dxRootInfoOff + dxRootInfoLen
	dxNodeCountOff = 8 // after an empty dirent header
)

var errBadDx = errors.New("ext4: unusable htree index")

// dirBlock reads logical block lblk of a directory through the cache.
func (v *Volume) dirBlock(dir *inode, lblk uint64) ([]byte, error) {
	nblocks, err := v.dirBlocks(dir)
	if err != nil {
		return nil, err
	}
	if lblk >= nblocks {
		return nil, corruptf("directory inode %d: block %d beyond its %d blocks", dir.num, lblk, nblocks)
	}
	r, err := v.mapBlock(dir, lblk)
	if err != nil {
		return nil, err
	}
	if r.kind != runData {
		return nil, corruptf("directory inode %d: hole at block %d", dir.num, lblk)
	}
	return v.readBlock(r.phys)
}

type dxFrame struct {
	b        []byte
	countOff int
	count    int
	at       int
}

func (f *dxFrame) hash(i int) uint32 {
	return binary.LittleEndian.Uint32(f.b[f.countOff+i*8:])
}

func (f *dxFrame) child(i int) uint64 {
	return uint64(binary.LittleEndian.Uint32(f.b[f.countOff+i*8+4:]) & 0x0fffffff)
}

// dxFrameAt reads an index block and positions it on the last entry whose
// hash is <= h (entry 0 covers everything below entry 1).
func (v *Volume) dxFrameAt(dir *inode, lblk uint64, b []byte, countOff int, h uint32) (dxFrame, error) {
	le := binary.LittleEndian
	limit, count := int(le.Uint16(b[countOff:])), int(le.Uint16(b[countOff+2:]))
	want := (len(b) - countOff) / 8
	if v.metaCsum {
		want-- // room for the dx_tail
	}
	if limit != want || count == 0 || count > limit {
		return dxFrame{}, fmt.Errorf("directory inode %d block %d: limit %d count %d: %w", dir.num, lblk, limit, count, errBadDx)
	}
	if err := v.verifyDx(dir, lblk, b, countOff); err != nil {
		return dxFrame{}, err
	}
	f := dxFrame{b: b, countOff: countOff, count: count}
	f.at = sort.Search(count-1, func(i int) bool { return f.hash(i+1) > h })
	return f, nil
}

// dxLookup looks name up through the hash tree: root, up to two levels of
// nodes, one leaf; more leaves only while colliding hashes continue.
func (v *Volume) dxLookup(dir *inode, name []byte) (uint32, error) {
	nblocks, err := v.dirBlocks(dir)
	if err != nil {
		return 0, err
	}
	root, err := v.dirBlock(dir, 0)
	if err != nil {
		return 0, err
	}
	info := root[dxRootInfoOff:]
	version, infoLen, levels, flags := info[4], info[5], int(info[6]), info[7]
	maxLevels := 2
	if v.sb.incompat&incompatLargeDir != 0 {
		maxLevels = 3
	}
	if infoLen != dxRootInfoLen || levels >= maxLevels || flags&1 != 0 {
		return 0, fmt.Errorf("directory inode %d: dx_root info length %d levels %d: %w", dir.num, infoLen, levels, errBadDx)
	}
	if version <= hashTea && v.sb.flags&flagUnsignedHash != 0 {
		version += hashLegacyUnsigned
	}
	h, ok := dirHash(name, version, v.sb.hashSeed)
	if !ok {
		return 0, fmt.Errorf("directory inode %d: hash version %d: %w", dir.num, version, errBadDx)
	}
	frames := make([]dxFrame, 0, 3)
	f, err := v.dxFrameAt(dir, 0, root, dxRootCountOff, h)
	if err != nil {
		return 0, err
	}
	frames = append(frames, f)
	if err := v.dxDescend(dir, &frames, levels, h, false); err != nil {
		return 0, err
	}
	// Each iteration reads one leaf; a continuation never revisits one, so
	// the directory's block count bounds the loop.
	for range nblocks {
		top := &frames[len(frames)-1]
		lblk := top.child(top.at)
		b, err := v.dirBlock(dir, lblk)
		if err != nil {
			return 0, err
		}
		if err := v.verifyLeaf(dir, lblk, b); err != nil {
			return 0, err
		}
		var found uint32
		err = v.parseDirents(b, dirLoc{dir.num, int64(lblk)}, func(d dirent) bool {
			if bytes.Equal(d.name, name) {
				found = d.ino
				return false
			}
			return true
		})
		if err != nil {
			return 0, err
		}
		if found != 0 {
			return found, nil
		}
		// Entries with this hash may continue in the next leaf, marked by
		// the low bit of the next index entry's hash.
		i := len(frames) - 1
		for i >= 0 && frames[i].at+1 >= frames[i].count {
			i--
		}
		if i < 0 {
			return 0, fs.ErrNotExist
		}
		frames[i].at++
		if frames[i].hash(frames[i].at)&^1 != h {
			return 0, fs.ErrNotExist
		}
		frames = frames[:i+1]
		if err := v.dxDescend(dir, &frames, levels, h, true); err != nil {
			return 0, err
		}
	}
	return 0, corruptf("directory inode %d: htree continuation does not end", dir.num)
}

// dxDescend reads index nodes below the last frame until frames reaches
// the leaf level, positioning each on hash h, or on its first entry when
// leftmost (following a hash collision into the next leaf).
func (v *Volume) dxDescend(dir *inode, frames *[]dxFrame, levels int, h uint32, leftmost bool) error {
	for len(*frames) <= levels {
		top := &(*frames)[len(*frames)-1]
		lblk := top.child(top.at)
		b, err := v.dirBlock(dir, lblk)
		if err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(b) != 0 || v.recLen(binary.LittleEndian.Uint16(b[4:])) != len(b) {
			return fmt.Errorf("directory inode %d block %d is not an htree node: %w", dir.num, lblk, errBadDx)
		}
		f, err := v.dxFrameAt(dir, lblk, b, dxNodeCountOff, h)
		if err != nil {
			return err
		}
		if leftmost {
			f.at = 0
		}
		*frames = append(*frames, f)
	}
	return nil
}

// dxRootDots returns the "." and ".." inode numbers of an htree root
// block, whose ".." record spans the index that follows it.
func (v *Volume) dxRootDots(dir *inode, b []byte) (uint32, uint32, error) {
	le := binary.LittleEndian
	if le.Uint16(b[4:]) != 12 || b[6] != 1 || b[8] != '.' || b[18] != 2 || b[20] != '.' || b[21] != '.' {
		return 0, 0, corruptf("directory inode %d: htree root without \".\" and \"..\"", dir.num)
	}
	dot, dotdot := le.Uint32(b[0:]), le.Uint32(b[12:])
	if dot > v.sb.inodesCount || dotdot > v.sb.inodesCount {
		return 0, 0, corruptf("directory inode %d: htree root names inode %d / %d", dir.num, dot, dotdot)
	}
	return dot, dotdot, nil
}

// parent returns the inode number in dir's ".." entry, reading only the
// first block (or i_block for inline directories).
func (v *Volume) parent(dir *inode) (uint32, error) {
	if dir.flags&flagInlineData != 0 {
		return binary.LittleEndian.Uint32(dir.block[:]), nil
	}
	b, err := v.dirBlock(dir, 0)
	if err != nil {
		return 0, err
	}
	if v.isDx(dir) {
		_, p, err := v.dxRootDots(dir, b)
		return p, err
	}
	if err := v.verifyLeaf(dir, 0, b); err != nil {
		return 0, err
	}
	var p uint32
	err = v.parseDirents(b, dirLoc{dir.num, 0}, func(d dirent) bool {
		if string(d.name) == ".." {
			p = d.ino
			return false
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if p == 0 {
		return 0, corruptf("directory inode %d has no \"..\" entry", dir.num)
	}
	return p, nil
}
