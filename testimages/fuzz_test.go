package testimages

import (
	"strings"
	"testing"
)

const sfdiskGPTSample = `{
   "partitiontable": {
      "label": "gpt",
      "id": "2A1EF83F-9A23-4086-92CD-94A5B324090B",
      "device": "g.img",
      "unit": "sectors",
      "firstlba": 34,
      "lastlba": 1048542,
      "sectorsize": 512,
      "partitions": [
         {"node": "g.img1", "start": 2048, "size": 98304, "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "uuid": "77167965-B912-4387-A312-4B8FD11454E4", "name": "EFI System Partition"},
         {"node": "g.img2", "start": 100352, "size": 849920, "type": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "uuid": "AB7A2344-E553-48A8-89DA-D7984B3469FA", "name": "root"}
      ]
   }
}`

const sfdiskDOSSample = `{"partitiontable": {"label": "dos", "id": "0x151d7856", "device": "m.img", "unit": "sectors", "sectorsize": 512,
 "partitions": [{"node": "m.img1", "start": 2048, "size": 200704, "type": "83", "bootable": true},
  {"node": "m.img2", "start": 202752, "size": 305152, "type": "5"},
  {"node": "m.img5", "start": 204800, "size": 200704, "type": "83"}]}}`

func TestParseSfdisk(t *testing.T) {
	tests := []struct {
		in    string
		label string
		parts []Part
		ok    bool
	}{
		{sfdiskGPTSample, "gpt", []Part{
			{Number: 1, Start: mib, Size: 48 * mib, Type: gptTypeESP, Name: "EFI System Partition", GUID: "77167965-B912-4387-A312-4B8FD11454E4"},
			{Number: 2, Start: 49 * mib, Size: 415 * mib, Type: gptTypeRootX8664, Name: "root", GUID: "AB7A2344-E553-48A8-89DA-D7984B3469FA"},
		}, true},
		{sfdiskDOSSample, "dos", []Part{
			{Number: 1, Start: mib, Size: 98 * mib, Type: "83"},
			{Number: 2, Start: 99 * mib, Size: 149 * mib, Type: "5", FS: "extended"},
			{Number: 5, Start: 100 * mib, Size: 98 * mib, Type: "83"},
		}, true},
		{`{}`, "", nil, false},
		{`not json`, "", nil, false},
		{strings.Replace(sfdiskGPTSample, `"sectorsize": 512`, `"sectorsize": 3`, 1), "", nil, false},
		{strings.Replace(sfdiskGPTSample, `"start": 2048`, `"start": -1`, 1), "", nil, false},
		{strings.Replace(sfdiskGPTSample, `"start": 2048`, `"start": 9223372036854775807`, 1), "", nil, false},
		{strings.Replace(sfdiskGPTSample, `"g.img1"`, `"other"`, 1), "", nil, false},
	}
	for i, tc := range tests {
		label, parts, err := parseSfdisk([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%d: err %v, want ok=%v", i, err, tc.ok)
			continue
		}
		if label != tc.label || len(parts) != len(tc.parts) {
			t.Errorf("%d: %q %d parts", i, label, len(parts))
			continue
		}
		for j := range parts {
			if parts[j] != tc.parts[j] {
				t.Errorf("%d: part %d = %+v, want %+v", i, j, parts[j], tc.parts[j])
			}
		}
	}
}

func TestApplyBlkid(t *testing.T) {
	tests := []struct {
		in   string
		want Part
	}{
		{"DEVNAME=d.img\nLABEL=swap\nUUID=11111111-2222-4333-8444-555555555555\nVERSION=1\nTYPE=swap\n", Part{FS: "swap", Label: "swap", UUID: "11111111-2222-4333-8444-555555555555"}},
		{"LABEL_FATBOOT=ESP\nLABEL=ESP\nUUID=1234-5678\nVERSION=FAT32\nTYPE=vfat\n", Part{FS: "fat32", Label: "ESP", UUID: "1234-5678"}},
		{"TYPE=vfat\n", Part{FS: "fat"}},
		{"UUID=x\nTYPE=ext4\n", Part{FS: "ext4", UUID: "x"}},
		{"", Part{}},
		{"garbage without equals\n=\n", Part{}},
	}
	for i, tc := range tests {
		var p Part
		applyBlkid(&p, []byte(tc.in))
		if p != tc.want {
			t.Errorf("%d: %+v, want %+v", i, p, tc.want)
		}
	}
}

func FuzzParseSfdisk(f *testing.F) {
	f.Add([]byte(sfdiskGPTSample))
	f.Add([]byte(sfdiskDOSSample))
	f.Add([]byte(`{"partitiontable":{"label":"dos","device":"x","partitions":[{"node":"x1","start":1,"size":1,"type":"f"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		label, parts, err := parseSfdisk(b)
		if err != nil {
			return
		}
		if label == "" {
			t.Fatal("no label without error")
		}
		for _, p := range parts {
			if p.Number <= 0 || p.Start < 0 || p.Size < 0 {
				t.Fatalf("bad part %+v", p)
			}
		}
	})
}

func FuzzApplyBlkid(f *testing.F) {
	f.Add([]byte("LABEL=ESP\nUUID=1234-5678\nVERSION=FAT32\nTYPE=vfat\n"))
	f.Add([]byte("TYPE=ntfs\nUUID=1234567890ABCDEF\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Part
		applyBlkid(&p, b)
	})
}
