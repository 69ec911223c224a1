package testimages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// fakeTime is the clock every tool sees (E2FSPROGS_FAKE_TIME) and the base of
// generated timestamps: 2023-11-14T22:13:20Z.
const fakeTime = 1700000000

// toolEnv is added to every command: fixed time for e2fsprogs, no mtools
// geometry checks on image files, and a UTF-8 locale so mtools keeps Unicode
// long names.
var toolEnv = []string{
	fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", fakeTime),
	"MTOOLS_SKIP_CHECK=1",
	fmt.Sprintf("SOURCE_DATE_EPOCH=%d", fakeTime), // mtools: times of new directories
	"LC_ALL=C.UTF-8",
	"LANG=C.UTF-8",
}

// run runs a command and returns its stdout. A failure is wrapped with the
// command line and the tail of its stderr, so the reason shows in test logs.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, toolPath(name), args...)
	cmd.Env = append(os.Environ(), toolEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return stdout.Bytes(), &ToolError{Cmd: name + " " + strings.Join(args, " "), Err: err, Output: msg}
	}
	return stdout.Bytes(), nil
}

// runStdin runs a command with stdin.
func runStdin(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, toolPath(name), args...)
	cmd.Env = append(os.Environ(), toolEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return &ToolError{Cmd: name + " " + strings.Join(args, " "), Err: err, Output: strings.TrimSpace(stderr.String())}
	}
	return nil
}

// ToolError is returned when an external tool fails.
type ToolError struct {
	Cmd    string // command line
	Err    error  // usually *exec.ExitError
	Output string // tail of stderr (or stdout when stderr was empty)
}

func (e *ToolError) Error() string {
	return fmt.Sprintf("testimages: %s: %v: %s", e.Cmd, e.Err, e.Output)
}

func (e *ToolError) Unwrap() error { return e.Err }

// exitCode returns the exit status of a failed command, -1 if it did not exit.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// haveTool reports whether name is on PATH (or in an sbin directory, which a
// non-root PATH often lacks).
func haveTool(name string) bool {
	_, err := lookTool(name)
	return err == nil
}

// toolPath resolves name like lookTool, falling back to name itself.
func toolPath(name string) string {
	if p, err := lookTool(name); err == nil {
		return p
	}
	return name
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("testimages: %s: %w", name, exec.ErrNotFound)
}

// seeded derives deterministic bytes from the seed and a name.
func seeded(seed int64, name string) [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "dimg-testimages/%d/%s", seed, name))
}

// seededUUID is a deterministic version-4-shaped UUID, upper case (sgdisk and
// mke2fs accept either case).
func seededUUID(seed int64, name string) string {
	h := seeded(seed, name)
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// seededHex32 is a deterministic 32-bit value as 8 hex digits (FAT volume
// ID, MBR disk signature).
func seededHex32(seed int64, name string) string {
	h := seeded(seed, name)
	return fmt.Sprintf("%X", h[0:4])
}
