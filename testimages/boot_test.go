package testimages

import (
	"context"
	"testing"
	"time"
)

func TestParseBootLine(t *testing.T) {
	log := "junk\r\n[    1.0] x\r\nDIMG-BOOT root=UUID=ab dev=/dev/nvme0n1p2 uuid=ab hostname=h machine_id= fstab_root=UUID=ab end\r\n"
	r, err := ParseBootLine([]byte(log))
	if err != nil {
		t.Fatal(err)
	}
	if r.Get("hostname") != "h" || r.Get("machine_id") != "" || r.Get("fstab_root") != "UUID=ab" || r.Get("uuid") != "ab" {
		t.Fatalf("fields %v", r.Fields)
	}
	if _, err := ParseBootLine([]byte("DIMG-BOOT root=x trunc")); err == nil {
		t.Fatal("a truncated line parsed")
	}
	if _, err := ParseBootLine([]byte("DIMG-BOOT-ERROR reason=root-not-found:UUID=x\n")); err == nil {
		t.Fatal("an error line parsed")
	}
}

// TestBootDisks builds both bootable disks and boots each: the initramfs
// must find the root the way the disk says and see the disk's identities.
func TestBootDisks(t *testing.T) {
	RequireBoot(t)
	for _, kind := range []string{"bios", "uefi"} {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			disk, err := Cached(ctx, kind, Spec{})
			if err != nil {
				t.Fatal(err)
			}
			in, err := ReadInfo(disk)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Boot(ctx, disk, BootOptions{Firmware: kind})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s booted in %.1fs: %s", kind, res.Elapsed.Seconds(), res.Line)
			CheckBoot(t, res, in.Boot)
		})
	}
}
