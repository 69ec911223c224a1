package main

import (
	"github.com/dimg-project/dimg/cloneio"
)

// makePlan decides what to copy from src.
func makePlan(src *cloneio.Device, sector bool) (*cloneio.Plan, error) {
	p := cloneio.SectorPlan(src.Size, src.SectorSize)
	p.Info.Source = src.Path
	return p, nil
}
