package cloneio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
)

// Restore and clone onto a smaller disk.
//
// A Shrinker lays a source disk out anew for a smaller target. The source
// (an image or a disk) is never written: the filesystems are measured and
// shrunk on a copy-on-write overlay of it (imagefmt.Overlay, its scratch
// file in ShrinkOptions.ScratchDir), and what the target receives is a
// composed disk (shrunkDisk): the bytes before the first partition as they
// were, each partition's shrunk filesystem at its new start, and a
// partition table written for the new layout (parttable.Relayout). That
// disk goes through the ordinary clone pipeline (MakePlan, Clone, Target),
// so a shrinking restore copies, verifies and commits like any other.
//
// The layout rules (Layout):
//   - partitions keep their order and numbers; the first one never moves,
//     and the bytes before it (boot code, GRUB's core.img in the gap) are
//     copied byte for byte;
//   - a BIOS boot partition, and a partition holding a boot loader that
//     records absolute sectors (GRUB core.img by blocklist, LILO,
//     SYSLINUX/EXTLINUX, a Windows boot volume on an MBR disk), is pinned:
//     it and every partition before it keep their place and size;
//   - the others start on 1 MiB boundaries after the previous partition
//     (a logical partition keeps the distance to its EBR);
//   - ext2/3/4 (resize2fs), FAT12/16/32 (fat.Resize), NTFS (ntfsresize) and
//     swap (remade, same UUID and label) can shrink; anything else keeps
//     its size;
//   - free space is shared in proportion to the partitions' old sizes, no
//     partition smaller than its minimum nor larger than it was; with Grow
//     the earlier partitions keep their size where they can and the last
//     takes the rest.

// ShrinkOptions configure NewShrinker.
type ShrinkOptions struct {
	// Drivers probe the filesystems (the same list as MakePlan's).
	Drivers []fsdrivers.Driver
	// Grow gives the free space to the last partition instead of sharing
	// it in proportion.
	Grow bool
	// ScratchDir holds the overlay's scratch file (the chunks the shrinking
	// writes: up to the data moved). "" is os.TempDir().
	ScratchDir string
	// Expose makes the overlay's partitions files that e2fsprogs and
	// ntfs-3g's tools can open (cmd uses fusefs). Without it, ext and NTFS
	// partitions keep their size.
	Expose Exposer
	// Source names the source disk in messages.
	Source string
	Logger *slog.Logger
}

// WritableDisk is a disk that takes writes and can make them durable.
type WritableDisk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Exposer serves the partitions of d (opened as parts) as files
// DIR/pN.img that other programs can read and write, and returns DIR and a
// function that stops serving them.
type Exposer func(ctx context.Context, d WritableDisk, size int64, parts []disk.Part) (dir string, release func() error, err error)

// ShrinkPart is one partition of a ShrinkPlan. The JSON keys are those of
// dimg's --json output.
type ShrinkPart struct {
	Number   int    `json:"number"`
	FS       string `json:"fs,omitempty"`
	OldStart int64  `json:"old_start"`
	OldSize  int64  `json:"old_size"`
	NewStart int64  `json:"new_start"`
	NewSize  int64  `json:"new_size"`
	MinSize  int64  `json:"min_size"`
	// Action: "kept", "moved", "shrunk", "shrunk, moved".
	Action string `json:"action"`
	// Fixed says why the partition cannot shrink or move, "" if it can.
	Fixed    string `json:"fixed,omitempty"`
	Extended bool   `json:"extended,omitempty"`
	Logical  bool   `json:"logical,omitempty"`

	pinned bool  // keeps its start and size
	ebrGap int64 // logical: distance from its EBR to its start
	kind   string
	scale  bool // takes part in the proportional share
}

// ShrinkPlan is the layout a Shrinker chose for a target.
type ShrinkPlan struct {
	Table        string       `json:"table"`
	SourceBytes  int64        `json:"source_bytes"`
	TargetBytes  int64        `json:"target_bytes"`
	MinimumBytes int64        `json:"minimum_bytes"` // the smallest target the data fits
	Grow         bool         `json:"grow"`
	Partitions   []ShrinkPart `json:"partitions"`
	Notes        []string     `json:"notes"`
}

// TooSmallError says a target cannot hold the data, and how large it must
// be. It wraps ErrTooSmall.
type TooSmallError struct {
	Target, Minimum int64
	Detail          string
}

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("%v: the target holds %d bytes (%s), the data needs at least %d bytes (%s)%s; nothing was written",
		ErrTooSmall, e.Target, mibString(e.Target), e.Minimum, mibString(e.Minimum), e.Detail)
}

func (e *TooSmallError) Unwrap() error { return ErrTooSmall }

func mibString(n int64) string {
	if n >= 10<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

const shrinkAlign = 1 << 20

// Shrinker is a source disk being fitted to a smaller target: NewShrinker
// measures, Layout plans, Apply shrinks the filesystems on the overlay and
// returns the disk to copy; Close drops the overlay.
type Shrinker struct {
	opt     ShrinkOptions
	src     io.ReaderAt
	size    int64
	ss      int
	ovl     *imagefmt.Overlay
	disk    *disk.Disk // opened on the overlay
	parts   []ShrinkPart
	first   int64 // start of the first partition: what lies before is copied as is
	backup  int64 // bytes the table needs at the disk's end (GPT backup)
	dir     string
	release func() error
	notes   []string
	applied bool
}

// NewShrinker opens an overlay over src (size bytes; sectorSize 0
// detects; chunkSize is the overlay's copy-up unit, 0 the default) and
// measures how small each partition's filesystem can be.
func NewShrinker(ctx context.Context, src io.ReaderAt, size int64, sectorSize, chunkSize int, opt ShrinkOptions) (*Shrinker, error) {
	dir := opt.ScratchDir
	if dir == "" {
		dir = os.TempDir()
	}
	tmp, err := os.MkdirTemp(dir, ".dimg-shrink-")
	if err != nil {
		return nil, fmt.Errorf("cloneio: shrink: scratch directory: %w", err)
	}
	os.Remove(tmp) // only a unique name was wanted; NewOverlay creates the file
	ovl, err := imagefmt.NewOverlay(tmp, imagefmt.OverlayBase{R: src, Size: size, ChunkSize: chunkSize, ID: "shrink:" + opt.Source}, imagefmt.OverlayOptions{})
	if err != nil {
		return nil, fmt.Errorf("cloneio: shrink: %w", err)
	}
	s := &Shrinker{opt: opt, src: src, size: size, ovl: ovl}
	if err := s.open(ctx, sectorSize); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Shrinker) open(ctx context.Context, sectorSize int) error {
	d, err := disk.Open(s.ovl, s.size, sectorSize, s.opt.Drivers)
	if err != nil {
		return fmt.Errorf("read partition table of %s: %w", s.opt.Source, err)
	}
	s.disk = d
	t := d.Table
	if t.Kind == parttable.KindNone {
		return fmt.Errorf("cloneio: shrink: %s has no partition table; only a partitioned disk can be laid out anew", s.opt.Source)
	}
	s.ss = t.SectorSize
	if t.Kind == parttable.KindGPT {
		// 128 entries of 128 bytes and the header: what sgdisk reserves.
		s.backup = 33 * 512
		if s.ss > 512 {
			s.backup = int64(16*1024/s.ss+1) * int64(s.ss)
		}
	}
	s.first = s.size
	for _, p := range d.Parts {
		if !p.Extended {
			s.first = min(s.first, p.Start)
		}
	}
	needTool := false
	for i := range d.Parts {
		p := &d.Parts[i]
		sp := ShrinkPart{Number: p.Number, OldStart: p.Start, OldSize: p.Size, Extended: p.Extended, Logical: p.Logical}
		if p.Volume != nil {
			sp.FS = p.Volume.Type()
		}
		if p.Logical {
			sp.ebrGap = p.Start - s.ebrOf(p.Partition)
		}
		sp.kind = shrinkKind(sp.FS)
		needTool = needTool || sp.kind == "ext" || sp.kind == "ntfs"
		s.parts = append(s.parts, sp)
	}
	sort.SliceStable(s.parts, func(i, j int) bool { return s.parts[i].OldStart < s.parts[j].OldStart })
	if err := s.pin(); err != nil {
		return err
	}
	if needTool && s.opt.Expose != nil {
		dir, release, err := s.opt.Expose(ctx, s.ovl, s.size, d.Parts)
		if err != nil {
			return fmt.Errorf("cloneio: shrink: expose the partitions for resize2fs/ntfsresize: %w", err)
		}
		s.dir, s.release = dir, release
	}
	for i := range s.parts {
		if err := s.measure(ctx, &s.parts[i]); err != nil {
			return err
		}
	}
	return nil
}

// ebrOf is the LBA (in bytes) of a logical partition's EBR: the standard
// chain has one per logical partition, in front of it; read from the
// table's reserved ranges (the EBR sectors), the closest one before it.
func (s *Shrinker) ebrOf(p parttable.Partition) int64 {
	best := int64(-1)
	for _, r := range s.disk.Table.Reserved {
		for off := r.Off; off < r.Off+r.Len; off += int64(s.ss) {
			if off < p.Start && off > best && off > 0 {
				best = off
			}
		}
	}
	if best < 0 {
		return p.Start - int64(s.ss)
	}
	return best
}

// Close stops exposing the partitions and drops the overlay (its scratch
// file). The source was never written.
func (s *Shrinker) Close() error {
	var errs []error
	if s.release != nil {
		errs = append(errs, s.release())
		s.release = nil
	}
	if s.ovl != nil {
		errs = append(errs, s.ovl.Discard())
		s.ovl = nil
	}
	return errors.Join(errs...)
}

// MinimumBytes is the smallest target the data fits.
func (s *Shrinker) MinimumBytes() int64 {
	end, _, err := s.place(s.minSizes())
	if err != nil {
		return -1
	}
	return alignUp(end+s.backup, shrinkAlign)
}

// Layout plans the disk for a target of target bytes. A target that
// cannot hold the data gets a *TooSmallError.
func (s *Shrinker) Layout(target int64) (*ShrinkPlan, error) {
	plan := &ShrinkPlan{Table: s.disk.Table.Kind, SourceBytes: s.size, TargetBytes: target, Grow: s.opt.Grow,
		MinimumBytes: s.MinimumBytes(), Notes: append([]string{}, s.notes...)}
	if plan.MinimumBytes < 0 {
		_, _, err := s.place(s.minSizes())
		return nil, fmt.Errorf("cloneio: shrink: %w", err)
	}
	if target < plan.MinimumBytes {
		return plan, &TooSmallError{Target: target, Minimum: plan.MinimumBytes, Detail: s.fixedDetail()}
	}
	usable := (target - s.backup) / int64(s.ss) * int64(s.ss)
	sizes := s.distribute(usable)
	_, starts, err := s.place(sizes)
	if err != nil {
		return nil, fmt.Errorf("cloneio: shrink: %w", err)
	}
	for i, p := range s.parts {
		p.NewStart, p.NewSize = starts[i], sizes[i]
		switch {
		case p.NewSize < p.OldSize && p.NewStart != p.OldStart:
			p.Action = "shrunk, moved"
		case p.NewSize < p.OldSize:
			p.Action = "shrunk"
		case p.NewStart != p.OldStart:
			p.Action = "moved"
		default:
			p.Action = "kept"
		}
		if p.kind == "swap" && p.NewSize != p.OldSize {
			p.Action = strings.Replace(p.Action, "shrunk", "recreated smaller (same UUID and label)", 1)
		}
		plan.Partitions = append(plan.Partitions, p)
	}
	if s.opt.Grow {
		if last := s.lastResizable(); last < 0 || last != len(s.parts)-1 {
			plan.Notes = append(plan.Notes, "--grow: the last partition cannot be resized; the free space is shared among the others")
		}
	}
	return plan, nil
}

func (s *Shrinker) minSizes() []int64 {
	sizes := make([]int64, len(s.parts))
	for i, p := range s.parts {
		sizes[i] = p.MinSize
	}
	return sizes
}

// fixedDetail names the partitions that cannot shrink, for a refusal.
func (s *Shrinker) fixedDetail() string {
	var fixed []string
	for _, p := range s.parts {
		if p.Fixed != "" && !p.Extended {
			fixed = append(fixed, fmt.Sprintf("partition %d keeps its %s: %s", p.Number, mibString(p.OldSize), p.Fixed))
		}
	}
	if len(fixed) == 0 {
		return ""
	}
	return " (" + strings.Join(fixed, "; ") + ")"
}

func (s *Shrinker) lastResizable() int {
	for i := len(s.parts) - 1; i >= 0; i-- {
		if s.parts[i].Extended {
			continue
		}
		if s.parts[i].scale {
			return i
		}
		return -1
	}
	return -1
}

// distribute chooses each partition's size for a disk whose partitions
// must end by usable: the largest share of their old sizes (the same for
// every partition that can shrink, found by bisection) that fits, no
// partition under its minimum nor over its old size; what alignment leaves
// goes to the last partition that can take it. With Grow the share applies
// to all but the last resizable partition, which takes the rest.
func (s *Shrinker) distribute(usable int64) []int64 {
	last := -1
	if s.opt.Grow {
		last = s.lastResizable()
	}
	sizesAt := func(scale float64) []int64 {
		sizes := make([]int64, len(s.parts))
		for i, p := range s.parts {
			switch {
			case !p.scale || i == last:
				sizes[i] = p.MinSize
			default:
				v := int64(float64(p.OldSize)*scale) / shrinkAlign * shrinkAlign
				sizes[i] = min(max(v, p.MinSize), p.OldSize)
			}
		}
		return sizes
	}
	fits := func(sizes []int64) bool {
		end, _, err := s.place(sizes)
		return err == nil && end <= usable
	}
	lo, hi := 0.0, 1.0
	if fits(sizesAt(hi)) {
		lo = hi
	}
	for range 50 {
		if lo == hi {
			break
		}
		mid := (lo + hi) / 2
		if fits(sizesAt(mid)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	sizes := sizesAt(lo)
	// The rest, to the last partition that can grow into it.
	for i := len(s.parts) - 1; i >= 0; i-- {
		p := s.parts[i]
		if p.Extended {
			continue
		}
		if !p.scale {
			break // a fixed partition last: the rest stays free
		}
		end, _, _ := s.place(sizes)
		if rest := usable - end; rest > 0 {
			sizes[i] = min(sizes[i]+rest/shrinkAlign*shrinkAlign, p.OldSize)
		}
		break
	}
	return sizes
}

// place lays the partitions out with the given sizes (in s.parts order)
// and returns where the last one ends and each one's start. The extended
// container's size and start follow its logical partitions.
func (s *Shrinker) place(sizes []int64) (end int64, starts []int64, err error) {
	starts = make([]int64, len(s.parts))
	cursor := s.first
	extIdx := -1
	for i, p := range s.parts {
		if p.Extended {
			extIdx = i
			starts[i] = p.OldStart
			continue
		}
		var start int64
		switch {
		case p.pinned || p.OldStart == s.first:
			start = p.OldStart
			if cursor > start {
				return 0, nil, fmt.Errorf("partition %d cannot move (%s) but the partitions before it end at byte %d, after its start %d", p.Number, p.Fixed, cursor, start)
			}
		case p.Logical:
			start = alignUp(cursor, shrinkAlign) + p.ebrGap
			if start > p.OldStart && p.OldStart-p.ebrGap >= cursor {
				start = p.OldStart
			}
		default:
			start = alignUp(cursor, shrinkAlign)
			if start > p.OldStart && p.OldStart >= cursor {
				start = p.OldStart
			}
		}
		starts[i] = start
		cursor = start + sizes[i]
	}
	if extIdx >= 0 {
		first, last := int64(-1), int64(-1)
		for i, p := range s.parts {
			if p.Logical {
				if first < 0 {
					first = starts[i] - p.ebrGap
				}
				last = starts[i] + sizes[i]
			}
		}
		if first >= 0 {
			starts[extIdx], sizes[extIdx] = first, last-first
		} else {
			sizes[extIdx] = s.parts[extIdx].OldSize
			cursor = max(cursor, starts[extIdx]+sizes[extIdx])
		}
	}
	return cursor, starts, nil
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }

// Apply shrinks the filesystems of plan on the overlay and returns the
// disk to write to the target (plan.TargetBytes long) and the copy plan
// for it: Clone(ctx, d, copyPlan, target, ...) then writes it.
func (s *Shrinker) Apply(ctx context.Context, plan *ShrinkPlan) (io.ReaderAt, *Plan, error) {
	if s.applied {
		return nil, nil, errors.New("cloneio: shrink: Apply called twice")
	}
	s.applied = true
	for _, p := range plan.Partitions {
		if p.Extended || p.NewSize >= p.OldSize {
			continue
		}
		if err := s.resize(ctx, p); err != nil {
			return nil, nil, fmt.Errorf("cloneio: shrink partition %d (%s): %w", p.Number, p.FS, err)
		}
	}
	for _, p := range plan.Partitions {
		if !p.Extended && (p.NewStart != p.OldStart || p.NewSize != p.OldSize) {
			if err := s.fixups(p); err != nil {
				return nil, nil, fmt.Errorf("cloneio: move partition %d (%s): %w", p.Number, p.FS, err)
			}
		}
	}
	if err := s.ovl.Sync(); err != nil {
		return nil, nil, err
	}
	// The tools are done: stop serving the files before reading the
	// result, so nothing can change under the copy.
	if s.release != nil {
		if err := s.release(); err != nil {
			return nil, nil, err
		}
		s.release = nil
	}
	d, err := newShrunkDisk(s.ovl, s.size, plan, s.first, s.ss)
	if err != nil {
		return nil, nil, err
	}
	cp, err := MakePlan(d, plan.TargetBytes, s.ss, s.opt.Drivers, PlanOptions{Source: s.opt.Source})
	if err != nil {
		return nil, nil, fmt.Errorf("cloneio: shrink: the laid-out disk: %w", err)
	}
	// Every filesystem must still be recognised where it now lies: a
	// partition that no driver reads any more means the shrinking failed.
	byNum := map[int]imagefmt.PartitionInfo{}
	for _, pi := range cp.Info.Partitions {
		byNum[pi.Number] = pi
	}
	for _, p := range plan.Partitions {
		if p.FS != "" && byNum[p.Number].FS != p.FS {
			return nil, nil, fmt.Errorf("cloneio: shrink: partition %d held %s, the laid-out disk shows %q there", p.Number, p.FS, byNum[p.Number].FS)
		}
	}
	// fixups wrote NTFS's backup boot sector into the partition's last
	// sector too, which its used ranges do not name.
	for _, p := range plan.Partitions {
		if p.kind == "ntfs" && (p.NewSize != p.OldSize || p.NewStart != p.OldStart) {
			cp.Used = mergeRanges(append(cp.Used, Range{p.NewStart + p.NewSize - int64(s.ss), int64(s.ss)}), plan.TargetBytes)
		}
	}
	cp.Info.Warnings = append(cp.Info.Warnings, s.notes...)
	return d, cp, nil
}

// partFile is the file an Exposer serves for partition n.
func (s *Shrinker) partFile(n int) string {
	return filepath.Join(s.dir, fmt.Sprintf("p%d.img", n))
}

// SectorSize is the logical sector size of the source's partition table.
func (s *Shrinker) SectorSize() int { return s.ss }
