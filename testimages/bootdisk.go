package testimages

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// bootGeneratorVersion changes whenever the bootable disks (or their
// initramfs) change; it is part of their Cached key.
const bootGeneratorVersion = 2

// Default sizes of the bootable disks.
const (
	defaultBootSize = 256 * mib
	bootSwapSize    = 16 * mib
	bootESPSize     = 48 * mib
)

// GPT partition type of a BIOS boot partition (GRUB's core.img lives there).
const gptTypeBIOSBoot = "21686148-6449-6E6F-744E-656564454649"

// BootInfo says how a bootable disk boots and which identities it carries:
// what a booted disk is compared against.
type BootInfo struct {
	Firmware     string `json:"firmware"`       // "bios" or "uefi"
	Loader       string `json:"loader"`         // "grub"
	Kernel       string `json:"kernel"`         // kernel version
	RootPart     int    `json:"root_part"`      // partition number of the root
	RootUUID     string `json:"root_uuid"`      // ext4 UUID of the root
	RootPartUUID string `json:"root_part_uuid"` // GPT unique GUID of the root partition
	CmdlineRoot  string `json:"cmdline_root"`   // root= on the kernel command line
	SwapUUID     string `json:"swap_uuid"`
	ESPUUID      string `json:"esp_uuid,omitempty"` // FAT volume id of the ESP
	Hostname     string `json:"hostname"`
	MachineID    string `json:"machine_id"`
	CsumSeed     bool   `json:"csum_seed"` // the root has metadata_csum_seed
}

// BIOSDisk builds dir/bios.img: a GPT disk that a PC BIOS boots with
// GRUB 2, like a Debian install on a BIOS machine.
//
//	MBR  GRUB's boot.img (the protective partition entry kept)
//	1    BIOS boot partition (1 MiB) holding GRUB's core.img, whose prefix
//	     names the root partition
//	2    ext4 root: /boot/grub/grub.cfg finds it with search --fs-uuid and
//	     boots the kernel with root=UUID=; /etc holds hostname, hosts,
//	     machine-id, fstab, ssh host keys, default/grub, resume config
//	3    swap, named in fstab and as resume=UUID=
//
// The kernel and GRUB come from the boot kit (LoadBootKit); the initramfs
// is the test one (see BootResult): it prints what it found and powers off.
func BIOSDisk(ctx context.Context, dir string, spec Spec) (string, error) {
	b, err := newBuilder(ctx, dir, "bios", spec, defaultBootSize)
	if err != nil {
		return "", err
	}
	return b.finish(b.bootDisk("bios"))
}

// UEFIDisk builds dir/uefi.img: a GPT disk that UEFI firmware (OVMF)
// boots with GRUB 2 from the removable-media path of its ESP.
//
//	1  ESP (FAT32): EFI/BOOT/BOOTX64.EFI (GRUB with prefix /EFI/debian),
//	   EFI/debian/grub.cfg finding the root with search.fs_uuid (as
//	   Debian's is), and a systemd-boot style loader/entries/*.conf
//	2  ext4 root with metadata_csum_seed: grub.cfg boots the kernel with
//	   root=PARTUUID=; /etc as on the BIOS disk, fstab also mounts the ESP
//	   by its volume id
//	3  swap
func UEFIDisk(ctx context.Context, dir string, spec Spec) (string, error) {
	b, err := newBuilder(ctx, dir, "uefi", spec, defaultBootSize)
	if err != nil {
		return "", err
	}
	return b.finish(b.bootDisk("uefi"))
}

func (b *builder) bootDisk(firmware string) error {
	kit, err := LoadBootKit(b.ctx)
	if err != nil {
		return err
	}
	size, seed := b.spec.Size, b.spec.Seed
	first := mib
	lead := mib // the BIOS boot partition or the ESP
	if firmware == "uefi" {
		lead = bootESPSize
	}
	root := size - first - lead - bootSwapSize - mib
	if root < 64*mib {
		return fmt.Errorf("%w: a bootable disk needs at least %d MiB", ErrTooSmall, (first+lead+bootSwapSize+mib+64*mib)>>20)
	}
	b.info.Table = "gpt"
	b.info.DiskGUID = seededUUID(seed, "disk-guid")
	leadPart := Part{Number: 1, Start: first, Size: lead, Type: gptTypeBIOSBoot, Name: "BIOS boot partition"}
	if firmware == "uefi" {
		leadPart = Part{Number: 1, Start: first, Size: lead, FS: "fat32", Label: "ESP", Type: gptTypeESP,
			Name: "EFI System Partition", UUID: fatSerial(seed, "fs/1")}
	}
	b.info.Parts = []PartInfo{
		{Part: leadPart},
		{Part: Part{Number: 2, Start: first + lead, Size: root, FS: "ext4", Label: "root", Type: gptTypeRootX8664,
			Name: "root", UUID: fsUUID(seed, "fs/2")}},
		{Part: Part{Number: 3, Start: first + lead + root, Size: bootSwapSize, FS: "swap", Label: "swap", Type: gptTypeSwap,
			Name: "swap", UUID: fsUUID(seed, "fs/3")}},
	}
	if err := b.createDisk(); err != nil {
		return err
	}
	if err := b.sgdisk(); err != nil { // sets the partitions' GUIDs
		return err
	}
	ps := b.info.Parts
	rootPI, swapPI := &ps[1], &ps[2]
	bi := &BootInfo{
		Firmware: firmware, Loader: "grub", Kernel: kit.Version, RootPart: 2,
		RootUUID: rootPI.UUID, RootPartUUID: strings.ToLower(rootPI.GUID), SwapUUID: swapPI.UUID,
		Hostname:  "golden",
		MachineID: fmt.Sprintf("%x", seeded(seed, "machine-id"))[:32],
		CsumSeed:  firmware == "uefi",
	}
	bi.CmdlineRoot = "UUID=" + bi.RootUUID
	if firmware == "uefi" {
		bi.ESPUUID = ps[0].UUID
		bi.CmdlineRoot = "PARTUUID=" + bi.RootPartUUID
	}
	b.info.Boot = bi

	initrd := filepath.Join(b.scratch, "initrd.img")
	if err := buildInitramfs(kit, initrd); err != nil {
		return err
	}
	plan := extPlan{
		fstype:   "ext4",
		mkfsArgs: []string{"-b", "4096", "-I", "256"},
		fill:     func(w *treeWriter) error { return bootRoot(w, kit, bi, initrd) },
	}
	if bi.CsumSeed {
		plan.mkfsArgs = append(plan.mkfsArgs, "-O", "metadata_csum_seed")
	}
	if err := b.buildExtUser(rootPI, plan); err != nil {
		return err
	}
	if err := b.buildSwap(swapPI); err != nil {
		return err
	}
	modules := []string{"part_gpt", "ext2", "fat", "search", "search_fs_uuid", "normal", "linux", "configfile", "echo", "test", "serial", "terminal"}
	if firmware == "bios" {
		// The prefix names the partition, not a UUID: a core.img holding
		// the root's UUID would have to be rebuilt when the UUID changes.
		return installGrubPC(b.ctx, kit, b.scratch, b.disk, ps[0].Start, ps[0].Size, "(hd0,gpt2)/boot/grub", append(modules, "biosdisk"))
	}
	efi := filepath.Join(b.scratch, "BOOTX64.EFI")
	if err := buildGrubEFI(b.ctx, kit, efi, "/EFI/debian", append(modules, "efi_gop")); err != nil {
		return err
	}
	return b.buildFAT(&ps[0], fatPlan{bits: 32, fill: func(w *treeWriter) error { return bootESP(w, bi, efi) }})
}

// bootRoot fills the root filesystem of a bootable disk.
func bootRoot(w *treeWriter, kit *BootKit, bi *BootInfo, initrd string) error {
	if err := w.copyIn(kit.Kernel, "boot/vmlinuz-"+kit.Version, 0o644); err != nil {
		return err
	}
	if err := w.copyIn(initrd, "boot/initrd.img-"+kit.Version, 0o644); err != nil {
		return err
	}
	if err := w.symlink("boot/vmlinuz-"+kit.Version, "vmlinuz"); err != nil {
		return err
	}
	if err := w.symlink("boot/initrd.img-"+kit.Version, "initrd.img"); err != nil {
		return err
	}
	fstab := "# /etc/fstab: static file system information.\n#\n# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n" +
		fmt.Sprintf("UUID=%s /               ext4    errors=remount-ro 0       1\n", bi.RootUUID)
	if bi.ESPUUID != "" {
		fstab += fmt.Sprintf("UUID=%s  /boot/efi       vfat    umask=0077      0       1\n", bi.ESPUUID)
	}
	fstab += fmt.Sprintf("UUID=%s none            swap    sw              0       0\n", bi.SwapUUID)
	cmdline := fmt.Sprintf("root=%s ro console=ttyS0 panic=-1 resume=UUID=%s", bi.CmdlineRoot, bi.SwapUUID)
	grubCfg := fmt.Sprintf(`# generated by dimg's testimages, in the shape grub-mkconfig gives
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'Debian GNU/Linux (dimg test)' --class debian {
	search --no-floppy --fs-uuid --set=root %s
	echo 'Loading Linux %s ...'
	linux /boot/vmlinuz-%s %s
	echo 'Loading initial ramdisk ...'
	initrd /boot/initrd.img-%s
}
`, bi.RootUUID, kit.Version, kit.Version, cmdline, kit.Version)
	texts := []struct{ rel, text string }{
		{"etc/hostname", bi.Hostname + "\n"},
		{"etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\t" + bi.Hostname + "\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"},
		{"etc/machine-id", bi.MachineID + "\n"},
		{"etc/fstab", fstab},
		{"etc/crypttab", "# <target name>\t<source device>\t\t<key file>\t<options>\n"},
		{"etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n"},
		{"etc/default/grub", fmt.Sprintf("GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0 resume=UUID=%s\"\n", bi.SwapUUID)},
		{"etc/initramfs-tools/conf.d/resume", fmt.Sprintf("RESUME=UUID=%s\n", bi.SwapUUID)},
		{"etc/kernel/cmdline", cmdline + "\n"},
		{"boot/grub/grub.cfg", grubCfg},
		{"etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n"},
	}
	for _, t := range texts {
		if err := w.writeText(t.rel, t.text, 0o644); err != nil {
			return err
		}
	}
	for _, k := range []string{"ecdsa", "ed25519", "rsa"} {
		key := fmt.Sprintf("-----BEGIN OPENSSH PRIVATE KEY-----\n%x\n-----END OPENSSH PRIVATE KEY-----\n", seeded(0, "ssh/"+k))
		if err := w.writeText("etc/ssh/ssh_host_"+k+"_key", key, 0o600); err != nil {
			return err
		}
		pub := fmt.Sprintf("ssh-%s %x root@%s\n", k, seeded(0, "ssh-pub/"+k), bi.Hostname)
		if err := w.writeText("etc/ssh/ssh_host_"+k+"_key.pub", pub, 0o644); err != nil {
			return err
		}
	}
	if err := w.symlink("/etc/machine-id", "var/lib/dbus/machine-id"); err != nil {
		return err
	}
	for _, d := range []string{"boot/efi", "proc", "sys", "dev", "run", "tmp", "root", "home"} {
		if err := w.mkdirAll(d); err != nil {
			return err
		}
	}
	return w.fixDirTimes()
}

// bootESP fills the ESP of the UEFI disk.
func bootESP(w *treeWriter, bi *BootInfo, efi string) error {
	if err := w.copyIn(efi, "EFI/BOOT/BOOTX64.EFI", 0o755); err != nil {
		return err
	}
	stub := fmt.Sprintf("search.fs_uuid %s root hd0,gpt2\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n", bi.RootUUID)
	if err := w.writeText("EFI/debian/grub.cfg", stub, 0o755); err != nil {
		return err
	}
	entry := fmt.Sprintf("title   Debian GNU/Linux (dimg test)\nversion %s\nmachine-id %s\nlinux   /vmlinuz-%s\ninitrd  /initrd.img-%s\noptions root=%s ro console=ttyS0 resume=UUID=%s\n",
		bi.Kernel, bi.MachineID, bi.Kernel, bi.Kernel, bi.CmdlineRoot, bi.SwapUUID)
	if err := w.writeText("loader/entries/"+bi.MachineID+"-"+bi.Kernel+".conf", entry, 0o755); err != nil {
		return err
	}
	if err := w.writeText("loader/loader.conf", "timeout 0\n", 0o755); err != nil {
		return err
	}
	return w.fixDirTimes()
}

// copyIn copies a host file into the tree.
func (w *treeWriter) copyIn(src, rel string, mode os.FileMode) error {
	if err := w.mkdirAll(filepath.Dir(rel)); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	defer in.Close()
	p := filepath.Join(w.root, rel)
	out, err := os.Create(p)
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimages: %w", err)
	}
	w.names[rel] = true
	w.st.Files++
	w.st.Bytes += n
	return w.finish(p, mode, 0)
}
