package testimages

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ErrNoBootKit is wrapped when the packages a bootable disk is built from
// (kernel, GRUB, OVMF, busybox) cannot be downloaded or unpacked, e.g. no
// apt or no network; tests skip on it (see RequireBoot).
var ErrNoBootKit = errors.New("testimages: boot kit unavailable")

// bootKitVersion changes whenever the kit's layout or package list changes.
const bootKitVersion = 1

// bootKitPackages are fetched with `apt-get download` and unpacked with
// `dpkg -x`, never installed: the host's bootloader is not touched. The
// kernel meta package is resolved to the versioned package it depends on.
var bootKitPackages = []string{"linux-image-cloud-amd64", "grub-common", "grub-pc-bin", "grub-efi-amd64-bin", "ovmf", "busybox-static"}

// BootKit is the unpacked packages a bootable test disk is made from and
// booted with. It lives in CacheDir()/bootkit-vN and is shared: read only.
type BootKit struct {
	Root     string // the unpacked tree
	Kernel   string // vmlinuz of linux-image-cloud-amd64 (NVMe, ext4 built in)
	Version  string // the kernel's version, e.g. 6.1.0-57-cloud-amd64
	GrubPC   string // /usr/lib/grub/i386-pc
	GrubEFI  string // /usr/lib/grub/x86_64-efi
	Mkimage  string // grub-mkimage
	OVMF     string // OVMF.fd (code and variables in one file, for -bios)
	Busybox  string // the static busybox
	Packages []string
}

// LoadBootKit returns the boot kit, downloading and unpacking it into the
// cache on first use (serialised across processes like Cached).
func LoadBootKit(ctx context.Context) (*BootKit, error) {
	dir := filepath.Join(CacheDir(), fmt.Sprintf("bootkit-v%d", bootKitVersion))
	done := filepath.Join(dir, "complete")
	if _, err := os.Stat(done); err != nil {
		if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoBootKit, err)
		}
		unlock, err := lockFile(ctx, dir+".lock")
		if err != nil {
			return nil, err
		}
		defer unlock()
		if _, err := os.Stat(done); err != nil {
			if err := fetchBootKit(ctx, dir); err != nil {
				return nil, err
			}
		}
	}
	return openBootKit(dir)
}

// fetchBootKit downloads and unpacks the packages into dir.
func fetchBootKit(ctx context.Context, dir string) error {
	for _, t := range []string{"apt-get", "apt-cache", "dpkg"} {
		if !haveTool(t) {
			return fmt.Errorf("%w: %s not found (a Debian or Ubuntu host is needed)", ErrNoBootKit, t)
		}
	}
	os.RemoveAll(dir)
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	debs := filepath.Join(tmp, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	defer os.RemoveAll(tmp)
	pkgs := append([]string(nil), bootKitPackages...)
	// The meta package holds no kernel: add the package it depends on.
	out, err := run(ctx, "apt-cache", "depends", "linux-image-cloud-amd64")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	m := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-cloud-amd64)`).FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("%w: apt-cache depends linux-image-cloud-amd64 names no kernel package", ErrNoBootKit)
	}
	pkgs = append(pkgs, string(m[1]))
	// apt-get download writes into the working directory.
	cmd := []string{"-o", "APT::Sandbox::User=root", "download"}
	if err := runIn(ctx, debs, "apt-get", append(cmd, pkgs...)...); err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	ents, err := os.ReadDir(debs)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	root := filepath.Join(tmp, "root")
	var names []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".deb") {
			continue
		}
		if _, err := run(ctx, "dpkg", "-x", filepath.Join(debs, e.Name()), root); err != nil {
			return fmt.Errorf("%w: %w", ErrNoBootKit, err)
		}
		names = append(names, strings.TrimSuffix(e.Name(), ".deb"))
	}
	// Keep the kernel image, drop its 100 MiB of modules (none is needed:
	// NVMe and ext4 are built in).
	os.RemoveAll(filepath.Join(root, "lib", "modules"))
	os.RemoveAll(filepath.Join(root, "usr", "lib", "modules"))
	if err := os.WriteFile(filepath.Join(tmp, "packages"), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	if _, err := openBootKit(tmp); err != nil {
		return err
	}
	os.RemoveAll(debs)
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNoBootKit, err)
	}
	return nil
}

// openBootKit finds the kit's files in an unpacked dir.
func openBootKit(dir string) (*BootKit, error) {
	root := filepath.Join(dir, "root")
	k := &BootKit{
		Root:    root,
		GrubPC:  filepath.Join(root, "usr/lib/grub/i386-pc"),
		GrubEFI: filepath.Join(root, "usr/lib/grub/x86_64-efi"),
		Mkimage: filepath.Join(root, "usr/bin/grub-mkimage"),
		OVMF:    filepath.Join(root, "usr/share/ovmf/OVMF.fd"),
		Busybox: filepath.Join(root, "bin/busybox"),
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*-cloud-amd64"))
	if len(kernels) != 1 {
		return nil, fmt.Errorf("%w: want one cloud kernel in %s, found %d", ErrNoBootKit, root, len(kernels))
	}
	k.Kernel = kernels[0]
	k.Version = strings.TrimPrefix(filepath.Base(k.Kernel), "vmlinuz-")
	for _, f := range []string{k.GrubPC + "/boot.img", k.GrubPC + "/diskboot.img", k.GrubEFI + "/kernel.img", k.Mkimage, k.OVMF, k.Busybox} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoBootKit, err)
		}
	}
	if f, err := os.Open(filepath.Join(dir, "packages")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k.Packages = append(k.Packages, sc.Text())
		}
		f.Close()
	}
	return k, nil
}

// runIn runs a command in a working directory.
func runIn(ctx context.Context, dir, name string, args ...string) error {
	cmd := commandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return &ToolError{Cmd: name + " " + strings.Join(args, " "), Err: err, Output: msg}
	}
	return nil
}

// commandContext is exec.CommandContext with the tools' environment and a
// bounded wait for output pipes after the process ends.
func commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, toolPath(name), args...)
	cmd.Env = append(os.Environ(), toolEnv...)
	cmd.WaitDelay = 10 * time.Second
	return cmd
}
