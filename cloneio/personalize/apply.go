package personalize

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/ext4"
	"github.com/dimg-project/dimg/fsdrivers/fat"
	"github.com/dimg-project/dimg/fsdrivers/fsedit"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/fsdrivers/swap"
)

// ErrNoLinuxRoot is wrapped when a disk has no ext2/3/4 filesystem with
// /etc/os-release or /etc/fstab.
var ErrNoLinuxRoot = errors.New("personalize: no Linux root filesystem found")

// Options say what to change. The zero value changes nothing.
type Options struct {
	Hostname          string // new hostname ("" keeps it); templates are expanded by the caller
	NewMachineID      bool   // empty /etc/machine-id (regenerated at first boot)
	RemoveSSHHostKeys bool   // remove /etc/ssh/ssh_host_*
	// NewIDs gives every ext2/3/4, FAT and swap filesystem a new UUID (or
	// volume id) and the partition table new GUIDs (MBR: disk
	// signature), and rewrites every reference to them.
	NewIDs  bool
	DryRun  bool // plan and report, write nothing
	Drivers []fsdrivers.Driver
	Rand    io.Reader // crypto/rand by default
}

// Any reports whether the options change anything.
func (o Options) Any() bool {
	return o.Hostname != "" || o.NewMachineID || o.RemoveSSHHostKeys || o.NewIDs
}

// Report says what was (or, with DryRun, would be) changed.
type Report struct {
	Roots []int        `json:"roots"` // partitions holding a Linux root
	IDs   []IDChange   `json:"ids"`
	Files []FileChange `json:"files"`
	Notes []string     `json:"notes"`
}

// IDChange is one identity replaced.
type IDChange struct {
	Part int    `json:"partition"` // 0: the partition table
	What string `json:"what"`      // "ext4 UUID", "FAT volume id", "swap UUID", "GPT disk GUID", "GPT partition GUID", "MBR disk signature"
	Old  string `json:"old"`
	New  string `json:"new"`
}

// FileChange is one file changed.
type FileChange struct {
	Part   int          `json:"partition"`
	Path   string       `json:"path"`
	Action string       `json:"action"` // "edit", "create", "remove", "symlink"
	Lines  []LineChange `json:"lines,omitempty"`
}

// refFiles are where references to identities live, on any ext or FAT
// partition: a root, a separate /boot, an ESP.
var refFiles = []string{
	"etc/fstab", "etc/crypttab", "etc/default/grub", "etc/default/grub.d/*.cfg",
	"etc/kernel/cmdline", "etc/initramfs-tools/conf.d/*", "etc/dracut.conf.d/*.conf",
	"boot/grub/grub.cfg", "boot/grub2/grub.cfg", "boot/loader/entries/*.conf",
	"boot/efi/EFI/*/grub.cfg", "boot/efi/loader/entries/*.conf",
	"grub/grub.cfg", "grub2/grub.cfg", "loader/entries/*.conf",
	"EFI/*/grub.cfg", "efi/*/grub.cfg",
}

// part is one partition being personalized.
type part struct {
	*fsdisk.Part
	kind string // "ext", "fat", "swap", "ntfs", ""
	ro   fsdrivers.Filesystem
	root bool
	dev  fsdrivers.ReadWriterAt // the partition's bytes
	w    fsdrivers.WritableFS   // opened on the first write
	ed   *fsedit.FS
	ops  []func() error // the writes planned, run after every read
}

// Disk personalizes the disk on dev (size bytes) in place. Files are
// changed through each filesystem's writer first, then identities are
// written; on failure part of it may be written (on an image the caller
// discards the session).
func Disk(ctx context.Context, dev fsdrivers.ReadWriterAt, size int64, opt Options) (*Report, error) {
	if opt.Rand == nil {
		opt.Rand = crand.Reader
	}
	if opt.Hostname != "" {
		if err := CheckHostname(opt.Hostname); err != nil {
			return nil, err
		}
	}
	d, err := fsdisk.Open(dev, size, 0, opt.Drivers)
	if err != nil {
		return nil, fmt.Errorf("personalize: %w", err)
	}
	rep := &Report{Roots: []int{}, IDs: []IDChange{}, Files: []FileChange{}, Notes: []string{}}
	var parts []*part
	var seen []string
	windows := false
	for i := range d.Parts {
		p := &part{Part: &d.Parts[i]}
		if p.Volume == nil {
			continue
		}
		typ := p.Volume.Type()
		seen = append(seen, fmt.Sprintf("%d %s", p.Number, typ))
		switch {
		case strings.HasPrefix(typ, "ext"):
			p.kind = "ext"
		case strings.HasPrefix(typ, "fat"):
			p.kind = "fat"
		case typ == "swap":
			p.kind = "swap"
		case strings.HasPrefix(typ, "ntfs"):
			p.kind = "ntfs"
		}
		p.dev = &section{dev, p.Start, p.Size}
		if p.kind == "ext" && needsRecovery(p.dev) {
			if opt.DryRun {
				rep.Notes = append(rep.Notes, fmt.Sprintf("partition %d: its journal needs recovery; the dry run read it without replaying it (a real run replays it first)", p.Number))
			} else if err := replay(p); err != nil {
				return nil, err
			}
		}
		p.ro, _ = p.Volume.(fsdrivers.Filesystem)
		if p.ro != nil && p.kind == "ext" && (exists(p.ro, "etc/os-release") || exists(p.ro, "etc/fstab")) {
			p.root = true
			rep.Roots = append(rep.Roots, p.Number)
		}
		if p.ro != nil && p.kind == "ntfs" && exists(p.ro, "Windows/System32") {
			windows = true
		}
		parts = append(parts, p)
	}
	if len(rep.Roots) == 0 {
		what := fmt.Sprintf("no ext2/3/4 partition has /etc/os-release or /etc/fstab (partitions: %s)", strings.Join(seen, ", "))
		if len(seen) == 0 {
			what = "no partition holds a filesystem dimg recognises"
		}
		if windows {
			what += "; this is a Windows disk: Windows identities (SID, computer name) are out of scope, use Sysprep (sysprep /generalize), which Microsoft requires for cloned installs"
		}
		return nil, fmt.Errorf("%w: %s", ErrNoLinuxRoot, what)
	}
	if windows {
		rep.Notes = append(rep.Notes, "a Windows installation is on this disk too: its identities are not changed (use Sysprep)")
	}

	ids, apply, err := planIDs(d, parts, opt, rep)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range parts {
			if p.w != nil {
				p.w.Close()
			}
		}
	}()
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if p.kind != "ext" && p.kind != "fat" || p.ro == nil {
			continue
		}
		if err := editFiles(p, ids, opt, rep); err != nil {
			return nil, err
		}
	}
	if opt.DryRun {
		return rep, nil
	}
	// Every file was read before anything is written: the read-only views
	// never see a half-changed filesystem.
	for _, p := range parts {
		for _, op := range p.ops {
			if err := op(); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range parts {
		if p.w == nil {
			continue
		}
		err := p.w.Close()
		p.w = nil
		if err != nil {
			return nil, fmt.Errorf("personalize: partition %d: writing the filesystem out: %w", p.Number, err)
		}
	}
	for _, f := range apply {
		if err := f(); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// needsRecovery reads the ext superblock's needs_recovery flag.
func needsRecovery(dev fsdrivers.ReadWriterAt) bool {
	b := make([]byte, 4)
	if _, err := dev.ReadAt(b, 1024+0x60); err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(b)&0x4 != 0
}

// replay has the ext4 writer replay a journal that needs recovery (its
// OpenWritable does, then Close writes the result), and reopens the
// partition's read-only view on the replayed filesystem.
func replay(p *part) error {
	w, err := ext4.Driver{}.OpenWritable(p.dev, p.Size)
	if err != nil {
		return fmt.Errorf("personalize: partition %d: %w", p.Number, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("personalize: partition %d: replaying the journal: %w", p.Number, err)
	}
	v, err := ext4.Open(p.dev, p.Size)
	if err != nil {
		return fmt.Errorf("personalize: partition %d: %w", p.Number, err)
	}
	p.Volume = v
	return nil
}

func exists(fsys fs.FS, p string) bool {
	_, err := fs.Stat(fsys, p)
	return err == nil
}

// planIDs picks the new identities, adds them to the report, and returns
// the references to rewrite and the writes that apply them.
func planIDs(d *fsdisk.Disk, parts []*part, opt Options, rep *Report) (IDMap, []func() error, error) {
	ids := IDMap{}
	if !opt.NewIDs {
		return ids, nil, nil
	}
	var apply []func() error
	// The partition table first: its GUIDs come in entry order from one
	// stream, which NewGUIDs reads in the same order.
	var stream bytes.Buffer
	switch d.Table.Kind {
	case parttable.KindGPT:
		g, err := newGUID(opt.Rand, &stream)
		if err != nil {
			return nil, nil, err
		}
		rep.IDs = append(rep.IDs, IDChange{What: "GPT disk GUID", Old: strings.ToLower(d.Table.DiskGUID), New: g})
		for _, tp := range d.Table.Partitions {
			g, err := newGUID(opt.Rand, &stream)
			if err != nil {
				return nil, nil, err
			}
			old := strings.ToLower(tp.GUID)
			ids[old] = g
			rep.IDs = append(rep.IDs, IDChange{Part: tp.Number, What: "GPT partition GUID", Old: old, New: g})
		}
	case parttable.KindMBR:
		var sig [4]byte
		for sig == [4]byte{} {
			if _, err := io.ReadFull(opt.Rand, sig[:]); err != nil {
				return nil, nil, err
			}
		}
		stream.Write(sig[:])
		newSig := binary.LittleEndian.Uint32(sig[:])
		rep.IDs = append(rep.IDs, IDChange{What: "MBR disk signature", Old: fmt.Sprintf("%08x", d.Table.MBRSignature), New: fmt.Sprintf("%08x", newSig)})
		for _, tp := range d.Table.Partitions {
			ids[fmt.Sprintf("%08x-%02x", d.Table.MBRSignature, tp.Number)] = fmt.Sprintf("%08x-%02x", newSig, tp.Number)
		}
	}
	if d.Table.Kind == parttable.KindGPT || d.Table.Kind == parttable.KindMBR {
		want := stream.Bytes()
		apply = append(apply, func() error {
			dev := parts[0].dev.(*section).dev
			if err := parttable.NewGUIDs(dev, d.Table.DiskSize, d.Table.SectorSize, bytes.NewReader(want)); err != nil {
				return fmt.Errorf("personalize: %w", err)
			}
			return nil
		})
	}
	for _, p := range parts {
		p := p
		switch p.kind {
		case "ext", "swap":
			var u [16]byte
			if _, err := io.ReadFull(opt.Rand, u[:]); err != nil {
				return nil, nil, err
			}
			u[6] = u[6]&0x0f | 0x40
			u[8] = u[8]&0x3f | 0x80
			nu := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
			old := strings.ToLower(p.Volume.UUID())
			what := p.Volume.Type() + " UUID"
			if old == "" {
				rep.Notes = append(rep.Notes, fmt.Sprintf("partition %d (%s) has no UUID: left as is", p.Number, p.Volume.Type()))
				continue
			}
			ids[old] = nu
			rep.IDs = append(rep.IDs, IDChange{Part: p.Number, What: what, Old: old, New: nu})
			apply = append(apply, func() error {
				var err error
				if p.kind == "ext" {
					_, err = ext4.SetUUID(p.dev, p.Size, u)
				} else {
					_, _, err = swap.SetUUID(p.dev, p.Size, u)
				}
				if err != nil {
					return fmt.Errorf("personalize: partition %d: %w", p.Number, err)
				}
				return nil
			})
		case "fat":
			old := p.Volume.UUID()
			if old == "" {
				rep.Notes = append(rep.Notes, fmt.Sprintf("partition %d (%s) has no volume id: left as is", p.Number, p.Volume.Type()))
				continue
			}
			var b [4]byte
			if _, err := io.ReadFull(opt.Rand, b[:]); err != nil {
				return nil, nil, err
			}
			id := binary.LittleEndian.Uint32(b[:])
			nu := fmt.Sprintf("%04X-%04X", id>>16, id&0xFFFF)
			ids[old] = nu
			rep.IDs = append(rep.IDs, IDChange{Part: p.Number, What: "FAT volume id", Old: old, New: nu})
			apply = append(apply, func() error {
				if _, _, err := fat.SetVolumeID(p.dev, p.Size, id); err != nil {
					return fmt.Errorf("personalize: partition %d: %w", p.Number, err)
				}
				return nil
			})
		}
	}
	return ids, apply, nil
}

// newGUID draws a version 4 GUID in its on-disk (mixed-endian) byte
// order, appends the bytes to stream and returns its text form.
func newGUID(r io.Reader, stream *bytes.Buffer) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("personalize: random GUID: %w", err)
	}
	b[7] = b[7]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	stream.Write(b[:])
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16]), nil
}

// editFiles changes the files of one partition.
func editFiles(p *part, ids IDMap, opt Options, rep *Report) error {
	if len(ids) > 0 {
		var files []string
		seenF := map[string]bool{}
		for _, pat := range refFiles {
			m, _ := fs.Glob(p.ro, pat)
			for _, f := range m {
				if !seenF[strings.ToLower(f)] {
					seenF[strings.ToLower(f)] = true
					files = append(files, f)
				}
			}
		}
		sort.Strings(files)
		for _, f := range files {
			st, err := p.ro.Lstat(f)
			if err != nil || !st.Mode().IsRegular() || st.Size() > 4<<20 {
				continue
			}
			b, err := fs.ReadFile(p.ro, f)
			if err != nil {
				return fmt.Errorf("personalize: partition %d: read /%s: %w", p.Number, f, err)
			}
			out, lines := ReplaceIDs(string(b), ids)
			if len(lines) == 0 {
				continue
			}
			if err := p.put(f, out, opt, rep, lines, "edit"); err != nil {
				return err
			}
		}
	}
	if !p.root {
		return nil
	}
	if opt.Hostname != "" {
		old := ""
		if b, err := fs.ReadFile(p.ro, "etc/hostname"); err == nil {
			old = strings.TrimSpace(string(b))
		}
		if old != opt.Hostname {
			act := "edit"
			if !exists(p.ro, "etc/hostname") {
				act = "create"
			}
			if err := p.put("etc/hostname", opt.Hostname+"\n", opt, rep, []LineChange{{Line: 1, Old: old, New: opt.Hostname}}, act); err != nil {
				return err
			}
		}
		if b, err := fs.ReadFile(p.ro, "etc/hosts"); err == nil {
			out, lines := SetHosts(string(b), old, opt.Hostname)
			if len(lines) > 0 {
				if err := p.put("etc/hosts", out, opt, rep, lines, "edit"); err != nil {
					return err
				}
			}
		}
	}
	if opt.NewMachineID {
		b, err := fs.ReadFile(p.ro, "etc/machine-id")
		switch {
		case err == nil && len(bytes.TrimSpace(b)) > 0:
			if err := p.put("etc/machine-id", "", opt, rep, []LineChange{{Line: 1, Old: strings.TrimSpace(string(b)), New: ""}}, "edit"); err != nil {
				return err
			}
		case err != nil && exists(p.ro, "etc"):
			if err := p.put("etc/machine-id", "", opt, rep, nil, "create"); err != nil {
				return err
			}
		}
		if st, err := p.ro.Lstat("var/lib/dbus/machine-id"); err == nil && st.Mode().IsRegular() {
			rep.Files = append(rep.Files, FileChange{Part: p.Number, Path: "/var/lib/dbus/machine-id", Action: "symlink"})
			p.ops = append(p.ops, func() error {
				ed, err := p.editor()
				if err != nil {
					return err
				}
				if err := ed.Remove("/var/lib/dbus/machine-id"); err != nil {
					return err
				}
				d, err := ed.Stat("/var/lib/dbus")
				if err != nil {
					return err
				}
				if _, err := ed.W.Symlink(d.Ino, "machine-id", "/etc/machine-id", fsdrivers.Owner{}); err != nil {
					return fmt.Errorf("personalize: partition %d: symlink /var/lib/dbus/machine-id: %w", p.Number, err)
				}
				return nil
			})
		}
	}
	if opt.RemoveSSHHostKeys {
		ents, _ := fs.ReadDir(p.ro, "etc/ssh")
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "ssh_host_") || e.IsDir() {
				continue
			}
			f := "/etc/ssh/" + e.Name()
			rep.Files = append(rep.Files, FileChange{Part: p.Number, Path: f, Action: "remove"})
			p.ops = append(p.ops, func() error {
				ed, err := p.editor()
				if err != nil {
					return err
				}
				return ed.Remove(f)
			})
		}
	}
	return nil
}

// editor opens the partition's writer on first use.
func (p *part) editor() (*fsedit.FS, error) {
	if p.ed != nil {
		return p.ed, nil
	}
	drv := writerFor(p)
	if drv == nil {
		return nil, fmt.Errorf("personalize: partition %d (%s): dimg cannot write this filesystem", p.Number, p.Volume.Type())
	}
	w, err := drv.OpenWritable(p.dev, p.Size)
	if err != nil {
		return nil, fmt.Errorf("personalize: partition %d: %w", p.Number, err)
	}
	p.w = w
	p.ed = fsedit.New(w, fmt.Sprintf("%d:", p.Number))
	return p.ed, nil
}

func writerFor(p *part) fsdrivers.WritableDriver {
	switch p.kind {
	case "ext":
		return ext4.Driver{}
	case "fat":
		return fat.Driver{}
	}
	return nil
}

// put records a change of file f (relative to the partition's root) and
// plans writing the new content in place.
func (p *part) put(f, content string, opt Options, rep *Report, lines []LineChange, action string) error {
	rep.Files = append(rep.Files, FileChange{Part: p.Number, Path: "/" + f, Action: action, Lines: lines})
	p.ops = append(p.ops, func() error {
		ed, err := p.editor()
		if err != nil {
			return err
		}
		po := fsedit.PutOptions{Force: true}
		if action == "create" {
			mode := uint32(0o644)
			if path.Base(f) == "machine-id" {
				mode = 0o444
			}
			po.Mode = &mode
		}
		if _, err := ed.Put("/"+f, strings.NewReader(content), po); err != nil {
			return fmt.Errorf("personalize: %w", err)
		}
		return nil
	})
	return nil
}

// section is a bounded read-write view of one partition.
type section struct {
	dev       fsdrivers.ReadWriterAt
	off, size int64
}

func (s *section) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	if rest := s.size - off; int64(len(p)) > rest {
		n, err := s.dev.ReadAt(p[:rest], s.off+off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.dev.ReadAt(p, s.off+off)
}

func (s *section) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > s.size {
		return 0, fmt.Errorf("personalize: write of %d bytes at %d past the partition's %d bytes", len(p), off, s.size)
	}
	return s.dev.WriteAt(p, s.off+off)
}
