package main

import (
	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/ext4"
	"github.com/dimg-project/dimg/fsdrivers/fat"
	"github.com/dimg-project/dimg/fsdrivers/ntfs"
	"github.com/dimg-project/dimg/fsdrivers/swap"
)

// drivers is the filesystem list every command probes with, in order.
// NTFS comes before FAT: an NTFS boot sector must never pass as FAT.
func drivers() []fsdrivers.Driver {
	return []fsdrivers.Driver{ext4.Driver{}, ntfs.Driver{}, fat.Driver{}, swap.Driver{}}
}

// makePlan decides what to copy from src.
func makePlan(src *cloneio.Device, sector bool) (*cloneio.Plan, error) {
	return cloneio.MakePlan(src, src.Size, src.SectorSize, drivers(), cloneio.PlanOptions{Sector: sector, Source: src.Path})
}
