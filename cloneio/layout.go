package cloneio

import (
	"context"
	"crypto/rand"
	"fmt"
	"os/exec"
	"strings"

	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

// LayoutOptions say how to fit a written disk to its target.
type LayoutOptions struct {
	// Grow extends the last partition to the end of the target and grows
	// its filesystem (ext2/3/4 through e2fsprogs' resize2fs).
	Grow bool
	// NewGUIDs gives a GPT disk new disk and partition GUIDs (MBR: a new
	// disk signature), so the copy can sit beside the original.
	NewGUIDs bool
}

// LayoutResult says what Commit changed in the partition table. The JSON
// keys are those of every --json output.
type LayoutResult struct {
	Relocated bool     `json:"gpt_backup_moved"` // the GPT backup moved to the target's end
	FSGrown   string   `json:"grown_filesystem"` // filesystem grown ("ext4"), "" if none
	Grown     int      `json:"grown_partition"`  // number of the partition grown, 0 if none
	GrownTo   int64    `json:"grown_to_bytes"`   // its new size in bytes
	NewGUIDs  bool     `json:"new_guids"`
	Notes     []string `json:"notes"`
}

// fitLayout adapts the partition table written to t for a disk of
// t.diskSize bytes to the target's real size, and applies t.layout.
func (t *Target) fitLayout(ctx context.Context) (*LayoutResult, error) {
	opt := t.layout
	res := &LayoutResult{Notes: []string{}}
	tbl, err := parttable.Read(t.f, t.diskSize, t.sectorSize)
	if err != nil {
		if opt.Grow || opt.NewGUIDs {
			return nil, fmt.Errorf("read the written partition table: %w", err)
		}
		return res, nil // no table we understand: nothing to move
	}
	if tbl.Kind == parttable.KindGPT && t.Size != t.diskSize {
		if err := parttable.RelocateGPT(t.f, t.diskSize, t.Size, tbl.SectorSize); err != nil {
			return nil, err
		}
		res.Relocated = true
	}
	if opt.NewGUIDs {
		if tbl.Kind == parttable.KindNone {
			return nil, fmt.Errorf("--new-disk-guid: the disk has no partition table")
		}
		if err := parttable.NewGUIDs(t.f, t.Size, tbl.SectorSize, rand.Reader); err != nil {
			return nil, err
		}
		res.NewGUIDs = true
	}
	if opt.Grow {
		if tbl.Kind == parttable.KindNone {
			return nil, fmt.Errorf("--grow: the disk has no partition table")
		}
		p, err := parttable.GrowLastPartition(t.f, t.Size, tbl.SectorSize)
		if err != nil {
			return nil, err
		}
		res.Grown, res.GrownTo = p.Number, p.Size
		if err := t.f.Sync(); err != nil {
			return nil, err
		}
		fs, note, err := growFilesystem(ctx, t.f.Name(), p.Start, p.Size)
		if err != nil {
			return nil, fmt.Errorf("grow partition %d's filesystem: %w", p.Number, err)
		}
		res.FSGrown = fs
		if note != "" {
			res.Notes = append(res.Notes, note)
		}
	}
	return res, t.f.Sync()
}

// growFilesystem grows the filesystem in [start, start+size) of the disk at
// path to fill it. Only ext2/3/4 is grown (resize2fs, after the e2fsck -f it
// demands); other filesystems are left as they are with a note.
func growFilesystem(ctx context.Context, path string, start, size int64) (fs, note string, err error) {
	loop, err := exec.CommandContext(ctx, "losetup", "-f", "--show", "-o", fmt.Sprint(start), "--sizelimit", fmt.Sprint(size), path).Output()
	if err != nil {
		return "", "", fmt.Errorf("attach a loop device for resize2fs (needs root): %w", exitDetail(err))
	}
	dev := strings.TrimSpace(string(loop))
	defer exec.Command("losetup", "-d", dev).Run()
	typ, _ := exec.CommandContext(ctx, "blkid", "-p", "-o", "value", "-s", "TYPE", dev).Output()
	switch fs = strings.TrimSpace(string(typ)); fs {
	case "ext2", "ext3", "ext4":
		// e2fsck exits 1 when it fixed something (e.g. free counts); only >= 4 is failure.
		if out, err := exec.CommandContext(ctx, "e2fsck", "-fy", dev).CombinedOutput(); err != nil {
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() >= 4 {
				return fs, "", fmt.Errorf("e2fsck -fy: %v: %s", err, lastLines(out))
			}
		}
		if out, err := exec.CommandContext(ctx, "resize2fs", dev).CombinedOutput(); err != nil {
			return fs, "", fmt.Errorf("resize2fs: %v: %s", err, lastLines(out))
		}
		return fs, "", nil
	case "":
		return "", "partition grown; no filesystem found to grow", nil
	default:
		return "", fmt.Sprintf("partition grown; its %s filesystem was not grown (grow it with its own tool)", fs), nil
	}
}

func exitDetail(err error) error {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

func lastLines(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " / ")
}
