package testimages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ErrBoot is wrapped when a disk did not boot to the test initramfs's line.
var ErrBoot = errors.New("testimages: disk did not boot")

// BootOptions says how to boot a disk. The zero value boots a "bios"
// disk for at most 3 minutes.
type BootOptions struct {
	Firmware string        // "bios" (SeaBIOS) or "uefi" (OVMF); default "bios"
	Timeout  time.Duration // default 3 minutes (TCG on a busy 2-core machine)
	Memory   int           // MiB, default 512
	// Console, when set, is where the serial console is written;
	// otherwise a temporary file that is removed.
	Console string
}

// BootResult is what the test initramfs printed: one line
//
//	DIMG-BOOT root=ARG dev=/dev/nvme0n1p2 uuid=U hostname=H machine_id=M
//	  dbus_machine_id=D fstab_root=F hosts=N1,N2 ssh_host_keys=K end
//
// where root is the kernel's root= argument, dev and uuid the device it
// mounted and that filesystem's UUID, hostname and machine_id the first
// lines of /etc/hostname and /etc/machine-id ("!missing" when absent,
// empty when empty), dbus_machine_id "symlink", a copied id or
// "!missing", fstab_root the device field of fstab's "/" line, hosts the
// names on /etc/hosts's 127.0.1.1 line, and ssh_host_keys how many
// /etc/ssh/ssh_host_* files there are.
type BootResult struct {
	Fields  map[string]string
	Line    string
	Elapsed time.Duration // from starting qemu to its exit
}

// Get returns a field ("" when absent).
func (r *BootResult) Get(k string) string { return r.Fields[k] }

// RequireBoot skips the test unless disks can be built and booted here
// (qemu, the tools of the generators, and the boot kit, which it loads).
func RequireBoot(t testing.TB) *BootKit {
	t.Helper()
	Require(t, "qemu-system-x86_64", "sgdisk", "e2fsprogs", "mkfs.vfat", "fsck.fat", "mtools", "mkswap", "blkid")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kit, err := LoadBootKit(ctx)
	if errors.Is(err, ErrNoBootKit) {
		t.Skipf("testimages: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return kit
}

// Boot boots a disk under qemu (TCG: this machine's KVM hangs nested
// guests) on an NVMe drive, with writes going to a throw-away snapshot,
// and returns the test initramfs's line. It fails with ErrBoot and the
// tail of the console when the line does not come before the timeout.
func Boot(ctx context.Context, disk string, opts BootOptions) (*BootResult, error) {
	if opts.Firmware == "" {
		opts.Firmware = "bios"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	if opts.Memory == 0 {
		opts.Memory = 512
	}
	console := opts.Console
	if console == "" {
		f, err := os.CreateTemp("", "dimg-boot-*.log")
		if err != nil {
			return nil, fmt.Errorf("testimages: boot: %w", err)
		}
		f.Close()
		console = f.Name()
		defer os.Remove(console)
	}
	abs, err := filepath.Abs(disk)
	if err != nil {
		return nil, fmt.Errorf("testimages: boot: %w", err)
	}
	if strings.Contains(abs, ",") {
		return nil, fmt.Errorf("testimages: boot: qemu cannot take a path with a comma: %s", abs)
	}
	args := []string{
		"-accel", "tcg", "-m", fmt.Sprint(opts.Memory), "-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "file:" + console, "-monitor", "none",
		"-drive", "file=" + abs + ",if=none,id=d0,format=raw,snapshot=on",
		"-device", "nvme,drive=d0,serial=dimgtest",
	}
	switch opts.Firmware {
	case "bios":
	case "uefi":
		kit, err := LoadBootKit(ctx)
		if err != nil {
			return nil, err
		}
		args = append(args, "-bios", kit.OVMF)
	default:
		return nil, fmt.Errorf("testimages: boot: unknown firmware %q (bios or uefi)", opts.Firmware)
	}
	cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmd := commandContext(cctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start)
	out, _ := os.ReadFile(console)
	res, perr := ParseBootLine(out)
	if perr == nil {
		res.Elapsed = elapsed
		return res, nil
	}
	tail := string(out)
	if len(tail) > 3000 {
		tail = "..." + tail[len(tail)-3000:]
	}
	why := perr.Error()
	switch {
	case cctx.Err() != nil:
		why = fmt.Sprintf("no line within %v", opts.Timeout)
	case runErr != nil:
		why = fmt.Sprintf("qemu: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	return nil, fmt.Errorf("%w: %s (%s, %s firmware, %.1fs); console:\n%s", ErrBoot, disk, why, opts.Firmware, elapsed.Seconds(), tail)
}

// ParseBootLine finds the test initramfs's line in a console log.
func ParseBootLine(console []byte) (*BootResult, error) {
	for _, line := range strings.Split(string(console), "\n") {
		line = strings.TrimRight(line, "\r")
		if i := strings.Index(line, BootLinePrefix+"-ERROR "); i >= 0 {
			return nil, fmt.Errorf("the initramfs failed: %s", line[i:])
		}
		i := strings.Index(line, BootLinePrefix+" ")
		if i < 0 || !strings.HasSuffix(line, " end") {
			continue
		}
		line = line[i:]
		r := &BootResult{Line: line, Fields: map[string]string{}}
		for _, f := range strings.Fields(strings.TrimSuffix(strings.TrimPrefix(line, BootLinePrefix+" "), " end")) {
			k, v, _ := strings.Cut(f, "=")
			r.Fields[k] = v
		}
		return r, nil
	}
	return nil, errors.New("no DIMG-BOOT line on the console")
}

// CheckBoot fails the test unless the booted system shows the identities
// that want (usually a disk's Info.Boot, updated by the test) names: the
// root found through the command line's root=, its UUID, the hostname,
// machine id and fstab's root entry.
func CheckBoot(t testing.TB, r *BootResult, want *BootInfo) {
	t.Helper()
	checks := []struct{ field, want string }{
		{"root", want.CmdlineRoot},
		{"uuid", want.RootUUID},
		{"hostname", want.Hostname},
		{"machine_id", want.MachineID},
		{"fstab_root", "UUID=" + want.RootUUID},
	}
	for _, c := range checks {
		if got := r.Get(c.field); !strings.EqualFold(got, c.want) {
			t.Errorf("booted: %s=%q, want %q (line: %s)", c.field, got, c.want, r.Line)
		}
	}
}
