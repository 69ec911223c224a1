//go:build tools

package tools

import (
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/klauspost/reedsolomon"
	_ "github.com/pierrec/lz4/v4"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "www.velocidex.com/golang/go-ntfs/parser"
)
