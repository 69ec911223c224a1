// Package layering holds the test that enforces the import layering of
// the module (it has no code of its own):
//
//	cmd → {cloneio, fusefs} → {imagefmt, fsdrivers} → internal
//
// A package may import its own tree (cloneio/multicast → cloneio) and any
// lower floor, never a higher floor nor its neighbour on the same floor:
// imagefmt and fsdrivers never import each other, nor do cloneio and
// fusefs. testimages and fsdrivers/fstestutil build test fixtures and may
// be imported by _test.go files only.
//
// A new top-level directory with Go code fails the test until it is given
// a floor in the table of layering_test.go.
package layering
