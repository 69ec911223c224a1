package testimages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// generatorVersion changes whenever a generator's output changes; it is part
// of the Cached key.
const generatorVersion = 2

// BootPattern is written, repeated and aligned to disk offset 0, into the
// MBR boot-code area and the gap before the first partition.
const BootPattern = "DIMG-BOOTCODE"

// Sentinel errors.
var (
	// ErrTooSmall: Spec.Size cannot hold the kind's layout.
	ErrTooSmall = errors.New("testimages: disk too small for layout")
	// ErrNeedRoot: the generator needs root, loop devices or FUSE.
	ErrNeedRoot = errors.New("testimages: needs root with loop devices")
	// ErrInvalid: a generated disk failed validation by the field's tools.
	ErrInvalid = errors.New("testimages: generated disk failed validation")
	// ErrUnknownKind: Cached was given a kind it does not know.
	ErrUnknownKind = errors.New("testimages: unknown kind")
)

// Spec says what to build. The zero value is small and fast.
type Spec struct {
	Size  int64      `json:"size"`  // disk size in bytes (default per kind)
	Files FileSource `json:"files"` // what fills the filesystems (default: ~20 MiB of generated files)
	Seed  int64      `json:"seed"`
	// UserSpace builds every filesystem without kernel mounts (mke2fs -d,
	// mtools) even when running as root. Without root this is forced.
	UserSpace bool `json:"user_space,omitempty"`
}

// FileSource says where file contents come from.
type FileSource struct {
	HostDirs []string `json:"host_dirs,omitempty"` // copy real files from these host dirs
	MaxBytes int64    `json:"max_bytes,omitempty"` // stop copying (or generating) after this many bytes
}

// Range is a byte range [Off, Off+Len) on the disk.
type Range struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// Part is one partition as the field's tools see it (sfdisk -J, blkid -p).
type Part struct {
	Number int    `json:"number"` // as Linux numbers it; 0 for a bare filesystem
	Start  int64  `json:"start"`  // bytes
	Size   int64  `json:"size"`   // bytes
	FS     string `json:"fs"`     // ext2/ext3/ext4, fat12/fat16/fat32, ntfs, swap, "extended", "" unknown
	Label  string `json:"label"`
	// Additions beyond the original contract:
	Type string `json:"type,omitempty"` // GPT type GUID or MBR type ("83", "5", "c")
	Name string `json:"name,omitempty"` // GPT partition name
	GUID string `json:"guid,omitempty"` // GPT unique partition GUID
	UUID string `json:"uuid,omitempty"` // filesystem UUID or FAT/NTFS serial, as blkid prints it
}

// PartInfo is what a generator put into one partition.
type PartInfo struct {
	Part
	treeStats
	// DeletedBytes of a file that was written and deleted: its data is
	// still in free blocks (stale data a filesystem-aware capture skips).
	DeletedBytes int64 `json:"deleted_bytes,omitempty"`
	// Notes name the notable entries (feature disk): e.g. "sparse: big.sparse".
	Notes []string `json:"notes,omitempty"`
}

// Info describes a generated disk; it is stored beside it as path+".json".
type Info struct {
	Kind      string `json:"kind"`
	Generator int    `json:"generator"`
	Spec      Spec   `json:"spec"`
	Size      int64  `json:"size"`
	// Kernel: the ext filesystems were written by the kernel through loop
	// mounts (used journal, stale data of deleted files, fragmentation).
	// False means they were built in user space (mke2fs -d).
	Kernel       bool       `json:"kernel"`
	Table        string     `json:"table"` // "gpt", "mbr", "none"
	DiskGUID     string     `json:"disk_guid,omitempty"`
	MBRSignature string     `json:"mbr_signature,omitempty"` // 8 hex digits
	Pattern      []Range    `json:"pattern,omitempty"`       // where BootPattern was written
	Parts        []PartInfo `json:"parts"`
	Boot         *BootInfo  `json:"boot,omitempty"` // bootable disks ("bios", "uefi")
}

const infoSuffix = ".json"

// ReadInfo reads the sidecar written next to a generated disk.
func ReadInfo(path string) (*Info, error) {
	b, err := os.ReadFile(path + infoSuffix)
	if err != nil {
		return nil, fmt.Errorf("testimages: read info: %w", err)
	}
	var in Info
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("testimages: read info %s: %w", path+infoSuffix, err)
	}
	return &in, nil
}

// PatternAt returns the n bytes of the boot pattern that belong at disk
// offset off.
func PatternAt(off int64, n int) []byte {
	b := make([]byte, n)
	fillPattern(b, off)
	return b
}

func fillPattern(b []byte, off int64) {
	p := int64(len(BootPattern))
	for i := range b {
		b[i] = BootPattern[(off+int64(i))%p]
	}
}

// writePattern writes the boot pattern over the given ranges of disk.
func writePattern(disk string, ranges []Range) error {
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	for _, r := range ranges {
		b := PatternAt(r.Off, int(r.Len))
		if _, err := f.WriteAt(b, r.Off); err != nil {
			f.Close()
			return fmt.Errorf("testimages: write boot pattern: %w", err)
		}
	}
	return f.Close()
}

// CheckPattern verifies that the boot pattern recorded in the disk's Info is
// present, e.g. after a restore.
func CheckPattern(path string) error {
	in, err := ReadInfo(path)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer f.Close()
	for _, r := range in.Pattern {
		got := make([]byte, r.Len)
		if _, err := f.ReadAt(got, r.Off); err != nil {
			return fmt.Errorf("testimages: read boot pattern: %w", err)
		}
		want := PatternAt(r.Off, int(r.Len))
		for i := range got {
			if got[i] != want[i] {
				return fmt.Errorf("testimages: boot pattern differs at disk offset %d", r.Off+int64(i))
			}
		}
	}
	return nil
}

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30

	defaultFileBytes = 20 * mib
)

func alignDown(v, a int64) int64 { return v / a * a }

// builder carries one generator run.
type builder struct {
	ctx     context.Context
	kind    string
	spec    Spec
	final   string // the path returned
	disk    string // the path being built (renamed to final on success)
	scratch string
	kernel  bool
	cl      cleanups
	info    Info
}

func newBuilder(ctx context.Context, dir, kind string, spec Spec, defaultSize int64) (*builder, error) {
	if spec.Size == 0 {
		spec.Size = defaultSize
	}
	spec.Size = alignDown(spec.Size, mib)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testimages: %w", err)
	}
	b := &builder{
		ctx:    ctx,
		kind:   kind,
		spec:   spec,
		final:  filepath.Join(dir, kind+".img"),
		kernel: haveKernel() && !spec.UserSpace,
	}
	b.disk = b.final + ".partial"
	b.info = Info{Kind: kind, Generator: generatorVersion, Spec: spec, Size: spec.Size, Kernel: b.kernel}
	scratch, err := os.MkdirTemp(dir, ".testimages-")
	if err != nil {
		return nil, fmt.Errorf("testimages: %w", err)
	}
	b.scratch = scratch
	b.cl.push(func() error { return os.RemoveAll(scratch) })
	return b, nil
}

// createDisk makes the (sparse) disk file.
func (b *builder) createDisk() error {
	os.Remove(b.disk)
	f, err := os.OpenFile(b.disk, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	err = f.Truncate(b.spec.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	return nil
}

// finish validates the disk, writes the Info sidecar and moves the disk into
// place. It runs the cleanups first so nothing is mounted while checking.
func (b *builder) finish(err error) (string, error) {
	if cerr := b.cl.run(); err == nil {
		err = cerr
	}
	if err == nil {
		err = b.ctx.Err()
	}
	if err == nil {
		err = b.validate()
	}
	if err == nil {
		var data []byte
		data, err = json.MarshalIndent(&b.info, "", "  ")
		if err == nil {
			err = os.WriteFile(b.final+infoSuffix, append(data, '\n'), 0o644)
		}
	}
	if err == nil {
		err = os.Rename(b.disk, b.final)
	}
	if err != nil {
		os.Remove(b.disk)
		if _, serr := os.Stat(b.final); serr != nil {
			os.Remove(b.final + infoSuffix)
		}
		return "", fmt.Errorf("testimages: build %s disk: %w", b.kind, err)
	}
	return b.final, nil
}

// validate checks the built disk with the field's tools and compares the
// layout they see with what was planned.
func (b *builder) validate() error {
	parts, err := Validate(b.ctx, b.disk)
	if err != nil {
		return err
	}
	if len(parts) != len(b.info.Parts) {
		return fmt.Errorf("%w: tools see %d partitions, planned %d", ErrInvalid, len(parts), len(b.info.Parts))
	}
	for i, p := range parts {
		want := b.info.Parts[i].Part
		if p.Number != want.Number || p.Start != want.Start || p.Size != want.Size || p.FS != want.FS || !strings.EqualFold(p.Label, want.Label) {
			return fmt.Errorf("%w: partition %d: tools see %+v, planned %+v", ErrInvalid, want.Number, p, want)
		}
		if want.UUID != "" && !strings.EqualFold(p.UUID, want.UUID) || want.GUID != "" && !strings.EqualFold(p.GUID, want.GUID) {
			return fmt.Errorf("%w: partition %d: tools see UUID %q GUID %q, planned %q %q", ErrInvalid, want.Number, p.UUID, p.GUID, want.UUID, want.GUID)
		}
		b.info.Parts[i].Part = p
	}
	if b.info.Pattern != nil {
		f, err := os.Open(b.disk)
		if err != nil {
			return fmt.Errorf("testimages: %w", err)
		}
		defer f.Close()
		for _, r := range b.info.Pattern {
			got := make([]byte, r.Len)
			if _, err := f.ReadAt(got, r.Off); err != nil {
				return fmt.Errorf("testimages: %w", err)
			}
			if string(got) != string(PatternAt(r.Off, int(r.Len))) {
				return fmt.Errorf("%w: boot pattern at %d was overwritten", ErrInvalid, r.Off)
			}
		}
	}
	return nil
}

// fileBudget is how many bytes of files go into a filesystem of size fsSize
// whose share of the spec's budget is share (percent).
func (b *builder) fileBudget(fsSize int64, share int64) int64 {
	budget := b.spec.Files.MaxBytes
	if budget <= 0 {
		if len(b.spec.Files.HostDirs) > 0 {
			budget = fsSize
		} else {
			budget = defaultFileBytes
		}
	}
	budget = budget * share / 100
	// Leave room for metadata, the journal and the deleted file.
	return min(budget, fsSize*6/10)
}
