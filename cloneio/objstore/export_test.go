package objstore

// PartBuffers is how many part buffers an S3 upload has allocated.
func PartBuffers(u Upload) int { return u.(*s3Upload).allocs }
