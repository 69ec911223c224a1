package testimages

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// haveKernel reports whether filesystems can be built through the kernel:
// root, loop devices, and an ext4 driver.
func haveKernel() bool {
	if os.Geteuid() != 0 {
		return false
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return false
	}
	return kernelHasFS("ext4") && haveTool("losetup")
}

// kernelHasFS reports whether /proc/filesystems lists fs.
func kernelHasFS(fs string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}

// cleanups is a stack of undo actions (umount, losetup -d, remove scratch)
// that runs in reverse order even when the build failed or ctx was
// canceled: a test disk must never leave a loop device or mount behind.
type cleanups struct {
	fns []func() error
}

func (c *cleanups) push(fn func() error) { c.fns = append(c.fns, fn) }

// pop runs and removes the most recent action.
func (c *cleanups) pop() error {
	if len(c.fns) == 0 {
		return nil
	}
	fn := c.fns[len(c.fns)-1]
	c.fns = c.fns[:len(c.fns)-1]
	return fn()
}

// run runs every remaining action and joins their errors.
func (c *cleanups) run() error {
	var errs []error
	for len(c.fns) > 0 {
		errs = append(errs, c.pop())
	}
	return errors.Join(errs...)
}

// attachLoop attaches [off, off+size) of file to a free loop device.
// Other processes may grab the same free device between the lookup and the
// attach; losetup then fails with "Device or resource busy", so retry.
func attachLoop(ctx context.Context, file string, off, size int64) (string, error) {
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		out, err := run(ctx, "losetup", "-f", "--show",
			"-o", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10), file)
		if err == nil {
			dev := strings.TrimSpace(string(out))
			if !strings.HasPrefix(dev, "/dev/loop") {
				return "", fmt.Errorf("testimages: losetup printed %q", dev)
			}
			return dev, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
	}
	return "", fmt.Errorf("testimages: attach loop for %s at %d: %w", file, off, lastErr)
}

// detachLoop detaches dev, retrying while udev or a lazy close still holds it.
func detachLoop(dev string) error {
	ctx := context.Background()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if _, err = run(ctx, "losetup", "-d", dev); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("testimages: detach %s: %w", dev, err)
}

// unmount unmounts mnt, retrying a busy mount for a few seconds.
func unmount(mnt string) error {
	ctx := context.Background()
	var err error
	for attempt := 0; attempt < 30; attempt++ {
		if _, err = run(ctx, "umount", mnt); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("testimages: umount %s: %w", mnt, err)
}

// mountLoop attaches a partition of file, mounts it on a new directory under
// scratch with the given filesystem type and options, and registers the
// undo actions on cl. It returns the mount point and the loop device.
func mountLoop(ctx context.Context, cl *cleanups, scratch, file string, off, size int64, fstype, opts string) (mnt, dev string, err error) {
	dev, err = attachLoop(ctx, file, off, size)
	if err != nil {
		return "", "", err
	}
	cl.push(func() error { return detachLoop(dev) })
	mnt, err = os.MkdirTemp(scratch, "mnt-")
	if err != nil {
		return "", "", fmt.Errorf("testimages: %w", err)
	}
	args := []string{"-t", fstype}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	if _, err := run(ctx, "mount", append(args, dev, mnt)...); err != nil {
		return "", "", err
	}
	cl.push(func() error { return unmount(mnt) })
	return mnt, dev, nil
}
