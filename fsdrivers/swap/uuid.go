package swap

import (
	"fmt"

	"github.com/dimg-project/dimg/fsdrivers"
)

// SetUUID gives the swap area on dev a new UUID (mkswap -U, swaplabel -U):
// the 16 bytes of the version 1 header; nothing else refers to it.
func SetUUID(dev fsdrivers.ReadWriterAt, size int64, uuid [16]byte) (old, new string, err error) {
	vol, err := (Driver{}).Open(dev, size)
	if err != nil {
		return "", "", err
	}
	v := vol.(*Volume)
	if v.Version() != 1 {
		return "", "", fmt.Errorf("swap: version %d area has no UUID: %w", v.Version(), fsdrivers.ErrReadOnly)
	}
	if _, err := dev.WriteAt(uuid[:], uuidOff); err != nil {
		return "", "", fmt.Errorf("swap: write UUID: %w", err)
	}
	u := uuid
	return v.UUID(), fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}
