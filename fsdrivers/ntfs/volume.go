package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/lru"
)

var errCorrupt = fsdrivers.ErrCorrupt

// Driver recognises NTFS. The zero value is ready to use.
type Driver struct{}

// Name implements fsdrivers.Driver.
func (Driver) Name() string { return "ntfs" }

// Open implements fsdrivers.Driver: it checks the boot sector, then loads
// the $MFT's own record (falling back to $MFTMirr) and the volume label.
func (Driver) Open(r io.ReaderAt, size int64) (fsdrivers.Volume, error) {
	return Open(r, size)
}

// Open opens the NTFS volume in r (one partition of size bytes).
func Open(r io.ReaderAt, size int64) (*Volume, error) {
	if size < 512 {
		return nil, fmt.Errorf("ntfs: %w", fsdrivers.ErrNotFound)
	}
	b := make([]byte, 512)
	if err := readFull(r, b, 0); err != nil {
		return nil, fmt.Errorf("ntfs: read boot sector: %w", err)
	}
	bs, err := parseBoot(b, size)
	if err != nil {
		return nil, err
	}
	v := &Volume{r: r, size: size, boot: bs, records: lru.New[uint64, *record](recordCacheSize)}
	if err := v.loadMFT(); err != nil {
		return nil, err
	}
	if rec, err := v.record(recVolume); err == nil {
		for _, a := range rec.attrs {
			if a.typ == atVolumeName && a.resident {
				v.label = utf16le(a.value)
			}
		}
	} else {
		return nil, fmt.Errorf("ntfs: $Volume: %w", err)
	}
	return v, nil
}

// Volume is an opened NTFS volume. It is safe for concurrent use.
type Volume struct {
	r     io.ReaderAt
	size  int64
	boot  *bootSector
	mft   *stream
	label string

	records *lru.Cache[uint64, *record] // parsed MFT records by number

	upcaseOnce sync.Once
	upcase     []uint16 // nil if $UpCase is unreadable
}

var (
	_ fsdrivers.UsedRanger = (*Volume)(nil)
	_ fsdrivers.Filesystem = (*Volume)(nil)
	_ fs.ReadLinkFS        = (*Volume)(nil)
	_ fsdrivers.XattrFS    = (*Volume)(nil)
)

// Type implements fsdrivers.Volume.
func (*Volume) Type() string { return "ntfs" }

// UUID is the volume serial number as blkid prints it: 16 upper-case hex
// digits.
func (v *Volume) UUID() string { return fmt.Sprintf("%016X", v.boot.serial) }

// Label is the volume name from $Volume.
func (v *Volume) Label() string { return v.label }

// ClusterSize is the allocation unit in bytes.
func (v *Volume) ClusterSize() int64 { return v.boot.clusterSize }

// loadMFT builds the $MFT data stream from record 0, read at the boot
// sector's MFT cluster, or from the mirror when that copy is damaged.
func (v *Volume) loadMFT() error {
	var rec0 *record
	var errs []error
	for _, lcn := range []int64{v.boot.mftLCN, v.boot.mftMirrLCN} {
		b := make([]byte, v.boot.recordSize)
		if err := v.readDisk(b, lcn*v.boot.clusterSize); err != nil {
			return fmt.Errorf("ntfs: read $MFT record: %w", err)
		}
		r, err := parseRecord(b, recMFT)
		if err == nil {
			rec0 = r
			break
		}
		errs = append(errs, fmt.Errorf("at cluster %d: %w", lcn, err))
	}
	if rec0 == nil {
		return fmt.Errorf("ntfs: %w: $MFT record: %w", errCorrupt, errors.Join(errs...))
	}
	// First the extents in the base record; with those we can read the
	// extension records an $ATTRIBUTE_LIST may point to, then all of them.
	var err error
	if v.mft, err = v.newStream(pick(rec0.attrs, atData, ""), "$MFT $DATA"); err != nil {
		return fmt.Errorf("ntfs: %w: %w", errCorrupt, err)
	}
	if len(pick(rec0.attrs, atAttributeList, "")) > 0 {
		attrs, err := v.allAttrs(rec0)
		if err != nil {
			return fmt.Errorf("ntfs: $MFT: %w", err)
		}
		if v.mft, err = v.newStream(pick(attrs, atData, ""), "$MFT $DATA"); err != nil {
			return fmt.Errorf("ntfs: %w: %w", errCorrupt, err)
		}
	}
	if v.mft.dataSize < 16*v.boot.recordSize {
		return fmt.Errorf("ntfs: %w: $MFT of %d bytes", errCorrupt, v.mft.dataSize)
	}
	return nil
}

// pick returns the attributes of type typ named name.
func pick(attrs []attribute, typ uint32, name string) []attribute {
	var out []attribute
	for _, a := range attrs {
		if a.typ == typ && a.name == name {
			out = append(out, a)
		}
	}
	return out
}

// recordCacheSize bounds the record cache: ~1 KiB each, plus attributes.
const recordCacheSize = 2048

// record reads MFT record n (cached).
func (v *Volume) record(n uint64) (*record, error) {
	rs := v.boot.recordSize
	if n >= uint64(v.mft.dataSize/rs) {
		return nil, fmt.Errorf("ntfs: %w: record %d beyond the MFT's %d records", errCorrupt, n, v.mft.dataSize/rs)
	}
	return v.records.Get(n, func() (*record, error) {
		b := make([]byte, rs)
		if _, err := v.mft.ReadAt(b, int64(n)*rs); err != nil {
			return nil, fmt.Errorf("ntfs: read record %d: %w", n, err)
		}
		r, err := parseRecord(b, n)
		if errors.Is(err, errNotInUse) {
			return nil, fmt.Errorf("ntfs: record %d: %w", n, err)
		}
		if err != nil {
			return nil, fmt.Errorf("ntfs: %w: record %d: %w", errCorrupt, n, err)
		}
		return r, nil
	})
}

// maxAttrListBytes bounds an $ATTRIBUTE_LIST. Each entry is at least 32
// bytes and real lists stay far below this even for very fragmented files.
const maxAttrListBytes = 4 << 20

// allAttrs returns a base record's attributes, including those moved to
// extension records through its $ATTRIBUTE_LIST.
func (v *Volume) allAttrs(base *record) ([]attribute, error) {
	lists := pick(base.attrs, atAttributeList, "")
	if len(lists) == 0 {
		return base.attrs, nil
	}
	what := fmt.Sprintf("record %d $ATTRIBUTE_LIST", base.num)
	s, err := v.newStream(lists, what)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if s.dataSize > maxAttrListBytes {
		return nil, fmt.Errorf("%w: %s of %d bytes", errCorrupt, what, s.dataSize)
	}
	b := make([]byte, s.dataSize)
	if _, err := s.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	attrs := append([]attribute(nil), base.attrs...)
	seen := map[uint64]bool{base.num: true}
	for off := 0; off+26 <= len(b); {
		length := int(binary.LittleEndian.Uint16(b[off+4:]))
		if length < 26 || off+length > len(b) {
			return nil, fmt.Errorf("%w: %s: entry at %d of length %d", errCorrupt, what, off, length)
		}
		n := refNum(binary.LittleEndian.Uint64(b[off+16:]))
		off += length
		if seen[n] {
			continue
		}
		seen[n] = true
		ext, err := v.record(n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if refNum(ext.baseRef) != base.num {
			return nil, fmt.Errorf("%w: %s: record %d belongs to record %d", errCorrupt, what, n, refNum(ext.baseRef))
		}
		attrs = append(attrs, ext.attrs...)
	}
	return attrs, nil
}

// readDisk reads exactly len(b) bytes at off of the volume.
func (v *Volume) readDisk(b []byte, off int64) error {
	if off < 0 || off+int64(len(b)) > v.size {
		return fmt.Errorf("%w: read of %d bytes at %d outside the volume", errCorrupt, len(b), off)
	}
	return readFull(v.r, b, off)
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
