package imagefmt

import (
	"encoding/json"
	"fmt"
)

// DiskInfo is the disk description stored as JSON in the header's metadata
// field (FORMAT.md, "Metadata"). Unknown fields are ignored by readers, so
// it can grow without a format version change.
type DiskInfo struct {
	Source       string          `json:"source,omitempty"`        // what was captured (path)
	Table        string          `json:"table"`                   // "gpt", "mbr" or "none"
	DiskGUID     string          `json:"disk_guid,omitempty"`     // GPT
	MBRSignature uint32          `json:"mbr_signature,omitempty"` // MBR disk identifier
	Mode         string          `json:"mode"`                    // "used" (filesystem-aware) or "sector"
	Partitions   []PartitionInfo `json:"partitions"`
	Warnings     []string        `json:"warnings,omitempty"`
}

// PartitionInfo describes one partition as found at capture time.
type PartitionInfo struct {
	Number   int    `json:"number"`
	Start    int64  `json:"start"` // bytes
	Size     int64  `json:"size"`  // bytes
	Type     string `json:"type"`  // GPT type GUID or MBR type "0x83"
	TypeName string `json:"type_name,omitempty"`
	GUID     string `json:"guid,omitempty"`
	Name     string `json:"name,omitempty"`
	Bootable bool   `json:"bootable,omitempty"`
	Extended bool   `json:"extended,omitempty"`
	Logical  bool   `json:"logical,omitempty"`
	FS       string `json:"fs,omitempty"` // "ext4", "fat32", "ntfs", "swap", "" unknown
	FSUUID   string `json:"fs_uuid,omitempty"`
	FSLabel  string `json:"fs_label,omitempty"`
	// Copy says how the partition was captured: "used" (only bytes the
	// filesystem uses), "header" (swap: header only), "sector" (everything).
	Copy string `json:"copy,omitempty"`
	// UsedBytes is what the filesystem reported in use (-1 unknown).
	UsedBytes int64 `json:"used_bytes"`
}

// ParseDiskInfo decodes header metadata; an empty field gives a zero DiskInfo.
func ParseDiskInfo(b []byte) (*DiskInfo, error) {
	di := &DiskInfo{}
	if len(b) == 0 {
		return di, nil
	}
	if err := json.Unmarshal(b, di); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrCorrupt, err)
	}
	return di, nil
}
