// Package personalize gives a deployed copy of a disk its own identity
// and rewrites every reference to the identities it changes, so the copy
// still boots and can share a network (and a machine) with the original.
//
// Vocabulary:
//
//   - Identity: the hostname (/etc/hostname, /etc/hosts), the machine id
//     (/etc/machine-id emptied, as systemd expects of an image; the D-Bus
//     copy made a symlink to it), the SSH host keys (removed: the
//     distribution or cloud-init makes new ones), and with NewIDs the
//     filesystem UUIDs (ext2/3/4, FAT volume ids, swap) and the partition
//     table's (GPT disk and partition GUIDs, MBR disk signature).
//   - Reference: a text naming an identity: /etc/fstab, /etc/crypttab,
//     GRUB's grub.cfg (search --fs-uuid, root=UUID=, root=PARTUUID=),
//     /etc/default/grub, BLS / systemd-boot loader entries, the ESP's GRUB
//     stub, /etc/kernel/cmdline, initramfs resume configuration.
//     ReplaceIDs rewrites them as whole tokens, keeping each occurrence's
//     case.
//   - Root: an ext2/3/4 partition with /etc/os-release or /etc/fstab.
//     Disks without one are refused with a clear message; Windows
//     identities (SID, computer name) are out of scope: Sysprep does that
//     and Microsoft requires it for cloned installs.
//
// Files are changed through each filesystem's writer (fsdrivers.WritableFS)
// and identities written in place afterwards; on an image everything goes
// to one copy-on-write session committed at once, on a device or raw file
// it is written directly. Not rewritten: initramfs images (they may embed
// a resume UUID; the kernel command line's resume= wins) and a BIOS GRUB
// core.img that embeds the root's UUID (the test disks, like grub-install
// with a partition prefix, do not).
package personalize
