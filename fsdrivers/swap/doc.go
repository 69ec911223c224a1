// Package swap recognises Linux swap areas.
//
// Vocabulary:
//   - Page: the swap area's page size, found by where the signature sits:
//     the last 10 bytes of the first page ("SWAPSPACE2" for version 1,
//     "SWAP-SPACE" for the ancient version 0), for page sizes 4 KiB-64 KiB.
//   - Header: the rest of the first page; version 1 keeps the UUID and the
//     label there (struct swap_header_v1_2 in the kernel, at byte 1024).
//
// Everything after the first page is swapped-out memory, meaningless once
// the system is down: the volume implements fsdrivers.HeaderOnly, whose
// HeaderRanges is the first page alone. Capture stores the header ("header"
// copy mode) and restore leaves the rest zero.
package swap
