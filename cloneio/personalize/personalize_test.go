package personalize_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/cloneio/personalize"
	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/ext4"
	"github.com/dimg-project/dimg/fsdrivers/fat"
	"github.com/dimg-project/dimg/fsdrivers/ntfs"
	"github.com/dimg-project/dimg/fsdrivers/swap"
	"github.com/dimg-project/dimg/testimages"
)

var drivers = []fsdrivers.Driver{ext4.Driver{}, ntfs.Driver{}, fat.Driver{}, swap.Driver{}}

func copyOf(t *testing.T, kind string) string {
	t.Helper()
	testimages.Require(t, kind)
	src, err := testimages.Cached(context.Background(), kind, testimages.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), kind+".img")
	if err := testimages.CopyDisk(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestTargetNewIDs personalizes raw copies of the GPT disk (kernel-written
// ext4 root with thousands of files, FAT32 ESP with a GRUB stub, swap)
// and the MBR disk: every filesystem and the table get new identities
// that blkid sees, the field's checkers find the disk clean, and the
// references follow.
func TestTargetNewIDs(t *testing.T) {
	for _, kind := range []string{"gpt", "mbr"} {
		t.Run(kind, func(t *testing.T) {
			disk := copyOf(t, kind)
			before, err := testimages.Partitions(disk)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			opt := personalize.Options{Hostname: "node-1", NewMachineID: true, NewIDs: true, Drivers: drivers}
			dry := opt
			dry.DryRun = true
			drep, err := personalize.Target(ctx, disk, dry)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := testimages.Validate(ctx, disk); err != nil {
				t.Fatal(err)
			}
			rep, err := personalize.Target(ctx, disk, opt)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Files) != len(drep.Files) || len(rep.IDs) != len(drep.IDs) {
				t.Errorf("real run: %d files %d ids, dry run: %d files %d ids", len(rep.Files), len(rep.IDs), len(drep.Files), len(drep.IDs))
			}
			after, err := testimages.Validate(ctx, disk)
			if err != nil {
				t.Fatalf("after personalize: %v", err)
			}
			newOf := map[string]string{}
			for _, id := range rep.IDs {
				newOf[strings.ToLower(id.Old)] = strings.ToLower(id.New)
			}
			for i, p := range after {
				b := before[i]
				for _, pair := range [][2]string{{b.UUID, p.UUID}, {b.GUID, p.GUID}} {
					if pair[0] == "" {
						continue
					}
					if want := newOf[strings.ToLower(pair[0])]; want == "" || !strings.EqualFold(pair[1], want) {
						t.Errorf("partition %d: %s is now %s; the report says %q", p.Number, pair[0], pair[1], want)
					}
				}
			}
			if len(rep.Roots) != 1 {
				t.Fatalf("roots %v", rep.Roots)
			}
			edited := map[string]bool{}
			for _, f := range rep.Files {
				edited[f.Path] = true
			}
			for _, f := range []string{"/etc/fstab", "/etc/hostname", "/etc/machine-id"} {
				if !edited[f] {
					t.Errorf("%s was not changed (%v)", f, rep.Files)
				}
			}
			if kind == "gpt" && !edited["/EFI/debian/grub.cfg"] {
				t.Errorf("the ESP's GRUB stub was not rewritten (%v)", rep.Files)
			}
		})
	}
}

// TestNoLinuxRoot: a disk without a Linux root is refused with the reason
// and nothing is written.
func TestNoLinuxRoot(t *testing.T) {
	testimages.Require(t, "e2fsprogs")
	img := filepath.Join(t.TempDir(), "empty.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", img).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v %s", err, out)
	}
	before, _ := os.ReadFile(img)
	_, err := personalize.Target(context.Background(), img, personalize.Options{Hostname: "x", NewIDs: true, Drivers: drivers})
	if !errors.Is(err, personalize.ErrNoLinuxRoot) || !strings.Contains(err.Error(), "1 ext4") {
		t.Fatalf("err = %v", err)
	}
	after, _ := os.ReadFile(img)
	if string(before) != string(after) {
		t.Fatal("a refused personalize wrote to the disk")
	}
}
