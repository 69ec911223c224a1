package parttable

// Contract types: Table, Partition, Range. Read (read.go) fills them; the
// writers (write.go) change a table in place on a disk.

// Kind of a partition table.
const (
	KindGPT  = "gpt"
	KindMBR  = "mbr"
	KindNone = "none" // a bare filesystem or an unknown layout: the whole disk is one region
)

// Table is a disk's partition layout.
type Table struct {
	Kind         string      `json:"kind"`
	SectorSize   int         `json:"sector_size"` // logical sector size the table was read with
	DiskSize     int64       `json:"disk_size"`
	DiskGUID     string      `json:"disk_guid,omitempty"`     // GPT, upper-case canonical form
	MBRSignature uint32      `json:"mbr_signature,omitempty"` // MBR disk identifier
	Partitions   []Partition `json:"partitions"`
	// Reserved are byte ranges that belong to the table itself and must be
	// copied verbatim: the MBR sector, GPT headers and entry arrays (primary
	// and backup), EBR sectors of logical partitions.
	Reserved []Range `json:"reserved,omitempty"`
	// Warnings are problems that did not stop the table from being read:
	// a damaged primary GPT replaced by its backup, a backup that is not at
	// the disk's end, overlapping partitions.
	Warnings []string `json:"warnings,omitempty"`
}

// Partition is one entry, numbered as the operating system numbers it. It
// is the project's one description of a partition: disk.Part embeds it
// with what was found inside, fusefs serves disk.Parts, `dimg ls --json`
// prints it, and cloneio records it in an image's metadata (as
// imagefmt.PartitionInfo, which has the same fields and JSON keys).
type Partition struct {
	Number   int    `json:"number"` // GPT: entry index + 1; MBR: 1-4 primary, 5.. logical
	Start    int64  `json:"start"`  // bytes from the disk's start
	Size     int64  `json:"size"`   // bytes
	Type     string `json:"type"`   // GPT type GUID (upper case) or MBR type as "0x83"
	TypeName string `json:"type_name,omitempty"`
	GUID     string `json:"guid,omitempty"` // GPT unique partition GUID
	Name     string `json:"name,omitempty"` // GPT partition name
	Bootable bool   `json:"bootable,omitempty"`
	Extended bool   `json:"extended,omitempty"` // MBR extended container: holds no filesystem
	Logical  bool   `json:"logical,omitempty"`
}

// Range is a byte range [Off, Off+Len) on the disk.
type Range struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}
