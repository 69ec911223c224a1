package main

import (
	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fat"
)

// drivers is the filesystem list every command probes with, in order.
func drivers() []fsdrivers.Driver {
	return []fsdrivers.Driver{fat.Driver{}}
}

// makePlan decides what to copy from src.
func makePlan(src *cloneio.Device, sector bool) (*cloneio.Plan, error) {
	return cloneio.MakePlan(src, src.Size, src.SectorSize, drivers(), cloneio.PlanOptions{Sector: sector, Source: src.Path})
}
