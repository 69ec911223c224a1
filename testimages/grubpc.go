package testimages

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Offsets in GRUB's i386-pc boot.img (the MBR boot code) and diskboot.img
// (the first sector of core.img), as grub-bios-setup patches them.
const (
	grubBPBStart     = 0x03  // a DOS BPB kept from the old MBR
	grubBPBEnd       = 0x5a  //
	grubKernelSector = 0x5c  // u64: LBA of core.img's first sector
	grubBootDrive    = 0x64  // 0xff: the drive the BIOS booted from
	grubDriveCheck   = 0x66  // a jmp replaced by two NOPs for hard disks
	grubNTMagic      = 0x1b8 // disk signature, partition table and 55AA stay
	grubBlocklist    = 512 - 12
	grubCoreSegment  = 0x0820
)

// installGrubPC does what grub-install --target=i386-pc does for a GPT
// disk, without a loop device or a mounted /boot: grub-mkimage makes
// core.img with the given prefix and modules built in, core.img goes into
// the BIOS boot partition at partStart, its first sector's blocklist is
// pointed at the rest of it, and boot.img goes into the MBR keeping the
// protective partition table.
func installGrubPC(ctx context.Context, kit *BootKit, scratch, disk string, partStart, partSize int64, prefix string, modules []string) error {
	core := filepath.Join(scratch, "core.img")
	args := append([]string{"-O", "i386-pc", "-d", kit.GrubPC, "-o", core, "-p", prefix}, modules...)
	if _, err := run(ctx, kit.Mkimage, args...); err != nil {
		return err
	}
	img, err := os.ReadFile(core)
	if err != nil {
		return fmt.Errorf("testimages: grub: %w", err)
	}
	nsec := (int64(len(img)) + 511) / 512
	if nsec*512 > partSize || nsec > 0xffff {
		return fmt.Errorf("testimages: grub: core.img is %d bytes, the BIOS boot partition %d", len(img), partSize)
	}
	img = append(img, make([]byte, nsec*512-int64(len(img)))...)
	lba := uint64(partStart / 512)
	bl := img[grubBlocklist:512]
	if binary.LittleEndian.Uint16(bl[10:]) != grubCoreSegment {
		return fmt.Errorf("testimages: grub: core.img's first sector is not diskboot.img")
	}
	binary.LittleEndian.PutUint64(bl[0:], lba+1)
	binary.LittleEndian.PutUint16(bl[8:], uint16(nsec-1))
	clear(img[grubBlocklist-12 : grubBlocklist]) // the list ends after one block

	boot, err := os.ReadFile(filepath.Join(kit.GrubPC, "boot.img"))
	if err != nil || len(boot) != 512 {
		return fmt.Errorf("testimages: grub: boot.img: %v (%d bytes)", err, len(boot))
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("testimages: grub: %w", err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("testimages: grub: %w", err)
	}
	copy(boot[grubBPBStart:grubBPBEnd], mbr[grubBPBStart:grubBPBEnd])
	copy(boot[grubNTMagic:], mbr[grubNTMagic:])
	binary.LittleEndian.PutUint64(boot[grubKernelSector:], lba)
	boot[grubBootDrive] = 0xff
	boot[grubDriveCheck], boot[grubDriveCheck+1] = 0x90, 0x90
	if _, err := f.WriteAt(img, partStart); err != nil {
		return fmt.Errorf("testimages: grub: %w", err)
	}
	if _, err := f.WriteAt(boot, 0); err != nil {
		return fmt.Errorf("testimages: grub: %w", err)
	}
	return f.Close()
}

// buildGrubEFI makes a removable-media GRUB (BOOTX64.EFI) with the given
// prefix and modules built in. A prefix without a device, like
// "/EFI/debian", is looked up on the partition GRUB was loaded from.
func buildGrubEFI(ctx context.Context, kit *BootKit, dst, prefix string, modules []string) error {
	args := append([]string{"-O", "x86_64-efi", "-d", kit.GrubEFI, "-o", dst, "-p", prefix}, modules...)
	_, err := run(ctx, kit.Mkimage, args...)
	return err
}

func timeOf(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
