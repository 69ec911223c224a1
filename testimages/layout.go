package testimages

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// GPT partition type GUIDs used by the generators.
const (
	gptTypeESP       = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	gptTypeRootX8664 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
	gptTypeLinuxFS   = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	gptTypeSwap      = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
	gptTypeBasicData = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
)

// sfdiskJSON is the subset of `sfdisk -J` output we read.
type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Device     string `json:"device"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// Partitions lists the partitions of a disk image as sfdisk -J sees them,
// with each filesystem's type, label and UUID as blkid -p probes them. A
// disk without a partition table is one Part numbered 0 covering the whole
// disk. An MBR extended container has FS "extended".
func Partitions(path string) ([]Part, error) {
	_, parts, err := partitions(context.Background(), path)
	return parts, err
}

// partitions also returns the table label: "gpt", "dos" or "none".
func partitions(ctx context.Context, path string) (string, []Part, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, fmt.Errorf("testimages: %w", err)
	}
	out, err := run(ctx, "sfdisk", "-J", path)
	if err != nil && (ctx.Err() != nil || exitCode(err) < 0) {
		return "", nil, err // canceled, or sfdisk could not run
	}
	if err != nil {
		// No table: one region, probed as a whole.
		p := Part{Number: 0, Start: 0, Size: st.Size()}
		if err := probe(ctx, path, &p); err != nil {
			return "", nil, err
		}
		return "none", []Part{p}, nil
	}
	label, parts, err := parseSfdisk(out)
	if err != nil {
		return "", nil, fmt.Errorf("testimages: sfdisk -J %s: %w", path, err)
	}
	for i := range parts {
		if parts[i].FS == "extended" {
			continue
		}
		if err := probe(ctx, path, &parts[i]); err != nil {
			return "", nil, err
		}
	}
	return label, parts, nil
}

// parseSfdisk turns `sfdisk -J` output into partitions (without FS, Label
// and UUID, which come from blkid; extended containers get FS "extended").
func parseSfdisk(out []byte) (string, []Part, error) {
	var sj sfdiskJSON
	if err := json.Unmarshal(out, &sj); err != nil {
		return "", nil, err
	}
	pt := sj.PartitionTable
	ss := pt.SectorSize
	if ss == 0 {
		ss = 512
	}
	if ss < 512 || ss > 65536 || ss&(ss-1) != 0 {
		return "", nil, fmt.Errorf("sector size %d", ss)
	}
	var parts []Part
	for _, sp := range pt.Partitions {
		num, err := nodeNumber(sp.Node, pt.Device)
		if err != nil {
			return "", nil, err
		}
		if sp.Start < 0 || sp.Size < 0 || sp.Start > (1<<62)/ss || sp.Size > (1<<62)/ss {
			return "", nil, fmt.Errorf("partition %d: start %d size %d out of range", num, sp.Start, sp.Size)
		}
		p := Part{
			Number: num,
			Start:  sp.Start * ss,
			Size:   sp.Size * ss,
			Type:   sp.Type,
			Name:   sp.Name,
			GUID:   sp.UUID,
		}
		if pt.Label == "dos" && isExtendedType(sp.Type) {
			p.FS = "extended"
		}
		parts = append(parts, p)
	}
	if pt.Label == "" {
		return "", nil, errors.New("no partition table label")
	}
	return pt.Label, parts, nil
}

func isExtendedType(t string) bool {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(t), "0x"), 16, 8)
	return err == nil && (v == 0x05 || v == 0x0f || v == 0x85)
}

// nodeNumber extracts the partition number from an sfdisk node name:
// "disk.img3" or "/dev/loop0p3".
func nodeNumber(node, device string) (int, error) {
	s := strings.TrimPrefix(node, device)
	s = strings.TrimPrefix(s, "p")
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("testimages: sfdisk node %q: no partition number", node)
	}
	return n, nil
}

// probe fills FS, Label and UUID from blkid's low-level probe of the range.
func probe(ctx context.Context, path string, p *Part) error {
	out, err := run(ctx, "blkid", "-p", "-o", "export",
		"-O", strconv.FormatInt(p.Start, 10), "-S", strconv.FormatInt(p.Size, 10), path)
	if err != nil {
		// 2: nothing recognised. Anything else is a real failure.
		if exitCode(err) == 2 {
			return nil
		}
		return err
	}
	applyBlkid(p, out)
	return nil
}

// applyBlkid sets FS, Label and UUID from `blkid -o export` output.
func applyBlkid(p *Part, out []byte) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			kv[k] = v
		}
	}
	p.Label = kv["LABEL"]
	p.UUID = kv["UUID"]
	switch t := kv["TYPE"]; t {
	case "vfat":
		p.FS = strings.ToLower(kv["VERSION"]) // FAT12, FAT16, FAT32
		if !strings.HasPrefix(p.FS, "fat") {
			p.FS = "fat"
		}
	default:
		p.FS = t
	}
}

// Validate checks a disk image with the field's tools: the partition table
// (sgdisk -v for GPT, sfdisk -V for MBR) and every filesystem it recognises
// (e2fsck -fn, fsck.fat -n, ntfsfix -n). It returns the partitions as
// Partitions does. Errors wrap ErrInvalid when a tool found a problem.
func Validate(ctx context.Context, path string) ([]Part, error) {
	label, parts, err := partitions(ctx, path)
	if err != nil {
		return nil, err
	}
	switch label {
	case "gpt":
		out, err := run(ctx, "sgdisk", "-v", path)
		if err != nil || !bytes.Contains(out, []byte("No problems found")) {
			return nil, fmt.Errorf("%w: sgdisk -v: %s %v", ErrInvalid, strings.TrimSpace(string(out)), err)
		}
	case "dos":
		if out, err := run(ctx, "sfdisk", "-V", path); err != nil {
			return nil, fmt.Errorf("%w: sfdisk -V: %s %w", ErrInvalid, out, err)
		}
	}
	var scratch string
	defer func() {
		if scratch != "" {
			os.RemoveAll(scratch)
		}
	}()
	// extracted copies a partition into a scratch file for tools that have
	// no offset option and no kernel driver to go through.
	extracted := func(p Part) (string, error) {
		if scratch == "" {
			var err error
			if scratch, err = os.MkdirTemp(filepath.Dir(path), ".testimages-validate-"); err != nil {
				return "", fmt.Errorf("testimages: %w", err)
			}
		}
		f := filepath.Join(scratch, fmt.Sprintf("part%d", p.Number))
		return f, extractRange(path, p.Start, p.Size, f)
	}
	for _, p := range parts {
		var err error
		switch {
		case p.FS == "ext2" || p.FS == "ext3" || p.FS == "ext4":
			dev := path
			if p.Start != 0 {
				// e2fsprogs' unix I/O manager takes an offset after '?'.
				dev = fmt.Sprintf("%s?offset=%d", path, p.Start)
			}
			_, err = run(ctx, "e2fsck", "-fn", dev)
		case strings.HasPrefix(p.FS, "fat"):
			var f string
			if f, err = extracted(p); err == nil {
				_, err = run(ctx, "fsck.fat", "-n", f)
				os.Remove(f)
			}
		case p.FS == "ntfs":
			var f string
			if f, err = extracted(p); err == nil {
				_, err = run(ctx, "ntfsfix", "-n", f)
				os.Remove(f)
			}
		}
		if err != nil {
			var te *ToolError
			if errors.As(err, &te) {
				return nil, fmt.Errorf("%w: partition %d (%s): %w", ErrInvalid, p.Number, p.FS, err)
			}
			return nil, err
		}
	}
	return parts, nil
}
