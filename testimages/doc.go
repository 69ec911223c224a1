// Package testimages builds realistic, deterministic test disks for dimg's
// tests and benchmarks, using the field's own tools (sgdisk, sfdisk, mke2fs,
// mkfs.vfat + mtools, mkntfs + ntfs-3g, mkswap) and, when running as root,
// kernel loop mounts so the filesystems carry kernel-written layouts.
//
// Vocabulary:
//
//   - Kind: which disk to build: "gpt" (GPTDisk), "mbr" (MBRDisk), "bare"
//     (BareFS, an ext4 with no partition table), "feature" (FeatureDisk, one
//     partition per reader feature), "bios" (BIOSDisk) and "uefi" (UEFIDisk):
//     bootable GPT disks (GRUB 2, Debian's cloud kernel, a busybox
//     initramfs), always built in user space.
//   - Boot kit: the Debian packages the bootable disks are made from and
//     booted with (kernel, GRUB, OVMF, busybox-static), fetched once with
//     `apt-get download` and unpacked with `dpkg -x` into the cache, never
//     installed (LoadBootKit; RequireBoot skips a test without it or qemu).
//   - Boot: qemu under TCG boots a disk from an NVMe drive; the test
//     initramfs mounts the root the kernel command line names and prints one
//     DIMG-BOOT line (hostname, machine id, root UUID, fstab's root) that
//     BootResult parses and CheckBoot compares with Info.Boot.
//   - Spec: size, seed and the FileSource that fills the filesystems. The
//     zero value builds a small disk quickly enough for `go test`.
//   - Kernel build: as root with loop devices, ext4 partitions are attached by
//     offset (`losetup -o --sizelimit`; this kernel has no loop partition
//     scan), made, mounted and filled by the kernel. The disk then has what
//     only a kernel writes: a used journal, stale data of a deleted file in
//     free blocks, fragmentation. Info.Kernel records whether that happened.
//   - User-space build: without root (or with Spec.UserSpace) each
//     filesystem is built in a scratch file (`mke2fs -d`, `mcopy -s`) and
//     spliced into the disk at its offset. Stale data is then planted in the
//     partition before mke2fs instead of by deleting a file.
//   - Boot pattern: the bytes of BootPattern, repeated and aligned to disk
//     offset 0 (the byte at disk offset o is BootPattern[o%len]), written into
//     the MBR boot-code area (bytes 0..439) and into the gap between the
//     partition table and the first partition. Info.Pattern lists the ranges.
//   - Info: a JSON sidecar (disk path + ".json") describing what was built:
//     the layout, filesystem UUIDs and labels, file counts and bytes.
//   - Cache: Cached builds a disk once per (kind, spec, generator version)
//     into $DIMG_TESTIMAGES_CACHE or os.UserCacheDir()/dimg-testimages.
//     Cached files are shared: copy them (CopyDisk) before writing.
//
// Determinism: UUIDs, GUIDs, labels, volume IDs, hash seeds, file names,
// contents and timestamps derive from Spec.Seed; mke2fs runs with
// E2FSPROGS_FAKE_TIME. Kernel builds are deterministic in content and layout
// but not byte for byte (the kernel stamps mount and inode change times).
package testimages
