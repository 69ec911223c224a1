package ext4

import "fmt"

// inlineParts returns the two pieces of an inline-data inode: the 60 bytes
// of i_block and the value of system.data.
func (v *Volume) inlineParts(ino *inode) ([]byte, []byte, error) {
	if v.sb.incompat&incompatInlineData == 0 {
		return nil, nil, corruptf("inode %d has inline data without the inline_data feature", ino.num)
	}
	rest, err := v.inlineSystemData(ino)
	if err != nil {
		return nil, nil, err
	}
	return ino.block[:], rest, nil
}

// readData fills p with the file bytes at off (the caller keeps the range
// within the file size). Contiguous runs are read with one ReadAt each;
// holes and unwritten extents read as zeros. hint is the run found by the
// previous call on the same file, so sequential reads skip the tree walk;
// the run used last is returned for the next call.
func (v *Volume) readData(ino *inode, p []byte, off int64, hint run) (run, error) {
	if ino.flags&flagInlineData != 0 {
		head, rest, err := v.inlineParts(ino)
		if err != nil {
			return hint, err
		}
		if int64(len(head))+int64(len(rest)) < off+int64(len(p)) {
			return hint, corruptf("inode %d: inline data shorter than its size %d", ino.num, ino.size)
		}
		for len(p) > 0 {
			var n int
			if off < int64(len(head)) {
				n = copy(p, head[off:])
			} else {
				n = copy(p, rest[off-int64(len(head)):])
			}
			p, off = p[n:], off+int64(n)
		}
		return hint, nil
	}
	for len(p) > 0 {
		lblk := uint64(off) >> v.blockBits
		r := hint
		if !r.contains(lblk) {
			var err error
			if r, err = v.mapBlock(ino, lblk); err != nil {
				return hint, err
			}
			hint = r
		}
		within := off & (v.blockSize - 1)
		// Blocks left in the run, capped so the byte count cannot overflow.
		blocks := min(r.lblk+r.n-lblk, uint64(len(p))>>v.blockBits+1)
		n := min(int64(len(p)), int64(blocks)<<v.blockBits-within)
		if r.kind == runData {
			pos := int64(r.phys+(lblk-r.lblk))<<v.blockBits + within
			if err := v.readFull(p[:n], pos); err != nil {
				return hint, fmt.Errorf("ext4: inode %d: read %d bytes at byte %d: %w", ino.num, n, pos, err)
			}
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
	return hint, nil
}
