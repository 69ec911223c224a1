package cloneio

// SourceWarning returns a warning when a block device about to be read is
// mounted or in use: its filesystems may change while they are copied, so
// the copy may be inconsistent. Files and idle devices give "".
func SourceWarning(d *Device) string {
	if !d.IsBlock {
		return ""
	}
	if err := inUse(d.Path); err != nil {
		return err.Error() + "; a filesystem that changes while it is copied may be inconsistent in the copy (unmount it, or capture a snapshot)"
	}
	return ""
}
