package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/personalize"
)

// personalizeFlags are the identity options of personalize, restore, clone
// and receive.
type personalizeFlags struct {
	hostname  string
	csv       string
	mac       string
	index     int
	machineID bool
	sshKeys   bool
	newIDs    bool
}

const personalizeHelp = `
Identities: --hostname sets /etc/hostname and the machine's line in /etc/hosts;
a template such as 'lab-{n}' (or 'lab-{n:03}') takes n from --index, 'pc-{mac}'
the MAC address; --hostname-csv FILE maps MAC addresses to names ("MAC,hostname"
lines; the MAC is --mac or, on receive, that of --interface).
--new-machine-id empties /etc/machine-id so systemd makes a new one at first boot
(/var/lib/dbus/machine-id becomes a symlink to it); --remove-ssh-host-keys removes
/etc/ssh/ssh_host_* (Fedora and RHEL make new ones at boot; on Debian and Ubuntu
cloud-init or 'dpkg-reconfigure openssh-server' does); --new-fs-uuids gives every
ext2/3/4, FAT and swap filesystem a new UUID and the partition table new GUIDs (MBR:
a new disk signature), and rewrites every reference to them: /etc/fstab,
/etc/crypttab, grub.cfg (search --fs-uuid, root=UUID=, root=PARTUUID=), the ESP's
GRUB stub, /etc/default/grub, loader entries, /etc/kernel/cmdline, initramfs resume
configuration. Initramfs images are not rebuilt. The Linux root is found through
the partition table and /etc/os-release or /etc/fstab. Windows identities (SID,
computer name) are out of scope: use Sysprep, which Microsoft requires.`

func addPersonalizeFlags(cmd *cobra.Command, pf *personalizeFlags) {
	f := cmd.Flags()
	f.StringVar(&pf.hostname, "hostname", "", "set the hostname to `NAME` (templates: {n}, {n:03}, {mac})")
	f.StringVar(&pf.csv, "hostname-csv", "", "take the hostname from `FILE` of MAC,hostname lines")
	f.StringVar(&pf.mac, "mac", "", "this machine's MAC `ADDRESS` for {mac} and --hostname-csv")
	f.IntVar(&pf.index, "index", -1, "this machine's number `N` for {n} in --hostname")
	f.BoolVar(&pf.machineID, "new-machine-id", false, "empty /etc/machine-id (a new one is made at first boot)")
	f.BoolVar(&pf.sshKeys, "remove-ssh-host-keys", false, "remove /etc/ssh/ssh_host_*")
	f.BoolVar(&pf.newIDs, "new-fs-uuids", false, "new filesystem UUIDs and partition GUIDs, every reference rewritten")
}

func (pf *personalizeFlags) any() bool {
	return pf.hostname != "" || pf.csv != "" || pf.machineID || pf.sshKeys || pf.newIDs
}

// options turns the flags into personalize.Options; iface is the network
// interface whose MAC stands in for --mac (receive), or "".
func (pf *personalizeFlags) options(iface string) (personalize.Options, error) {
	opt := personalize.Options{NewMachineID: pf.machineID, RemoveSSHHostKeys: pf.sshKeys, NewIDs: pf.newIDs, Drivers: drivers()}
	mac := pf.mac
	if mac == "" && iface != "" {
		if ifc, err := net.InterfaceByName(iface); err == nil && len(ifc.HardwareAddr) > 0 {
			mac = ifc.HardwareAddr.String()
		}
	}
	if pf.hostname != "" && pf.csv != "" {
		return opt, usagef("give --hostname or --hostname-csv, not both")
	}
	switch {
	case pf.csv != "":
		b, err := os.ReadFile(pf.csv)
		if err != nil {
			return opt, err
		}
		m, err := personalize.ParseHostnameCSV(string(b))
		if err != nil {
			return opt, err
		}
		if mac == "" {
			return opt, usagef("--hostname-csv needs this machine's MAC address: give --mac")
		}
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return opt, usagef("--mac %q: %v", mac, err)
		}
		name, ok := m[hw.String()]
		if !ok {
			return opt, fmt.Errorf("%s lists no hostname for MAC %s", pf.csv, hw)
		}
		opt.Hostname = name
	case pf.hostname != "":
		name, err := personalize.ExpandHostname(pf.hostname, pf.index, mac)
		if err != nil {
			return opt, usageError{err}
		}
		opt.Hostname = name
	}
	return opt, nil
}

func newPersonalizeCmd() *cobra.Command {
	var pf personalizeFlags
	var dry, asJSON bool
	var message, delta string
	cmd := &cobra.Command{
		Use:   "personalize TARGET",
		Short: "Give a disk or image its own hostname, machine id and filesystem UUIDs",
		Long: `Personalize gives a copy of a system its own identity so that clones can share a
network and a machine: hostname, machine id, SSH host keys, filesystem UUIDs and
partition GUIDs, with every reference to a changed identity rewritten so the copy
still boots.

TARGET is a .dimg image (the change is one commit, or with --delta NEW.dimg a new
delta image over it), a block device or a raw disk file (changed in place; a block
device must not be in use). --dry-run lists every file and line it would change
and writes nothing. restore, clone and receive take the same options, so a
deployed disk comes out personalized in one step.
` + personalizeHelp,
		Example: `  dimg personalize --hostname web-2 --new-machine-id --new-fs-uuids golden.dimg
  dimg personalize --dry-run --new-fs-uuids /dev/sdc
  dimg restore --hostname 'lab-{n}' --index 7 --new-machine-id golden.dimg /dev/sda`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !pf.any() {
				return usagef("nothing to change: give --hostname, --hostname-csv, --new-machine-id, --remove-ssh-host-keys or --new-fs-uuids")
			}
			opt, err := pf.options("")
			if err != nil {
				return err
			}
			opt.DryRun = dry
			target := args[0]
			var rep *personalize.Report
			commit := ""
			if isImageFile(target) {
				base, _ := cmd.Flags().GetString("base")
				res, err := personalize.Image(cmd.Context(), target, opt, personalize.ImageOptions{Delta: delta, Base: base, ToolVersion: version, Message: message})
				if err != nil {
					return err
				}
				rep = res.Report
				if !dry && res.Changed {
					commit = fmt.Sprintf("commit %d of %s (%d chunks, %s changed)", res.Commit.Number, res.Target, res.Commit.ChunksChanged, humanBytes(res.Commit.BytesChanged))
				}
			} else {
				if delta != "" {
					return usagef("--delta applies to an image; %s is a disk", target)
				}
				if rep, err = personalize.Target(cmd.Context(), target, opt); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(os.Stdout, rep, dry)
			if commit != "" {
				fmt.Fprintf(os.Stderr, "dimg: %s: %s\n", personalize.Summary(opt), commit)
			}
			return nil
		},
	}
	addPersonalizeFlags(cmd, &pf)
	f := cmd.Flags()
	f.BoolVarP(&dry, "dry-run", "n", false, "list what would change; write nothing")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVarP(&message, "message", "m", "", "the commit's `MESSAGE` (images)")
	f.StringVar(&delta, "delta", "", "write the change as a new delta image `NEW.dimg` over the image")
	addBaseFlag(cmd)
	return cmd
}

// isImageFile reports whether path starts with the .dimg magic.
func isImageFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := io.ReadFull(f, b); err != nil {
		return false
	}
	return bytes.Equal(b, []byte("\x89DIMG\r\n\x1a"))
}

// printReport lists identities and files changed, with the lines.
func printReport(w io.Writer, rep *personalize.Report, dry bool) {
	verb := ""
	if dry {
		verb = "would "
	}
	for _, id := range rep.IDs {
		where := "disk"
		if id.Part != 0 {
			where = fmt.Sprintf("partition %d", id.Part)
		}
		fmt.Fprintf(w, "%s: %s%s %s -> %s\n", where, verb, "change "+id.What, id.Old, id.New)
	}
	for _, f := range rep.Files {
		fmt.Fprintf(w, "%d:%s: %s%s\n", f.Part, f.Path, verb, f.Action)
		for _, l := range f.Lines {
			if l.Old != "" {
				fmt.Fprintf(w, "  %d- %s\n", l.Line, l.Old)
			}
			if l.New != "" {
				fmt.Fprintf(w, "  %d+ %s\n", l.Line, l.New)
			}
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if len(rep.IDs) == 0 && len(rep.Files) == 0 {
		fmt.Fprintf(w, "nothing to change\n")
	}
}

// personalizeTarget personalizes a disk restore, clone or receive wrote.
func personalizeTarget(cmd *cobra.Command, pf *personalizeFlags, iface, target string) error {
	if !pf.any() {
		return nil
	}
	opt, err := pf.options(iface)
	if err != nil {
		return err
	}
	rep, err := personalize.Target(cmd.Context(), target, opt)
	if err != nil {
		return fmt.Errorf("%s was written but not personalized: %w", target, err)
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		fmt.Fprintf(os.Stderr, "dimg: %s: %d identities and %d files changed\n", personalize.Summary(opt), len(rep.IDs), len(rep.Files))
	}
	return nil
}
