package testimages

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// spliceBlock is the unit in which copies look for all-zero data to skip.
const spliceBlock = 64 << 10

// copySparse copies n bytes from src at srcOff to dst at dstOff, skipping
// holes (SEEK_DATA/SEEK_HOLE) and all-zero blocks, so a mostly empty
// partition image stays sparse in the disk. dst must read as zeros where
// nothing is written (a fresh truncated file, or a hole).
func copySparse(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	buf := make([]byte, 1<<20)
	end := srcOff + n
	pos := srcOff
	for pos < end {
		data, err := unix.Seek(int(src.Fd()), pos, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // only a hole remains
				return nil
			}
			// Filesystems without SEEK_DATA: copy everything.
			data = pos
		}
		if data >= end {
			return nil
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		for off := data; off < hole; {
			m := min(int64(len(buf)), hole-off)
			b := buf[:m]
			if _, err := src.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("testimages: read %s at %d: %w", src.Name(), off, err)
			}
			for i := 0; i < len(b); i += spliceBlock {
				blk := b[i:min(i+spliceBlock, len(b))]
				if isZero(blk) {
					continue
				}
				if _, err := dst.WriteAt(blk, dstOff+off-srcOff+int64(i)); err != nil {
					return fmt.Errorf("testimages: write %s: %w", dst.Name(), err)
				}
			}
			off += m
		}
		pos = hole
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// spliceFile writes the whole of the partition image file src into disk at
// off.
func spliceFile(disk string, off int64, src string) error {
	s, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer s.Close()
	st, err := s.Stat()
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	d, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	err = copySparse(d, off, s, 0, st.Size())
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// extractRange copies [off, off+n) of disk into a new sparse file dst.
func extractRange(disk string, off, n int64, dst string) error {
	s, err := os.Open(disk)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer s.Close()
	d, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	err = d.Truncate(n)
	if err == nil {
		err = copySparse(d, 0, s, off, n)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// CopyDisk copies a disk image (e.g. one returned by Cached) to dst, keeping
// it sparse, together with its Info sidecar. Tests that write to a cached
// disk must work on such a copy.
func CopyDisk(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	tmp := dst + ".partial"
	if err := extractRange(src, 0, st.Size(), tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("testimages: %w", err)
	}
	if b, err := os.ReadFile(src + infoSuffix); err == nil {
		if err := os.WriteFile(dst+infoSuffix, b, 0o644); err != nil {
			return fmt.Errorf("testimages: %w", err)
		}
	}
	return nil
}
