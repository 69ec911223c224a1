package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/dimg-project/dimg/cloneio/remote"
)

// The errors a read or an upload reports are cloneio/remote's, so a
// command handles an S3 object's and a web server's failures alike.
var (
	// ErrNotFound: the object, bucket or file does not exist.
	ErrNotFound = remote.ErrNotFound
	// ErrAccess: the server refused the credentials or the request.
	ErrAccess = remote.ErrDenied
	// ErrChanged: the object changed (another ETag) while it was read.
	ErrChanged = remote.ErrChanged
	// ErrNoRange: the server answered a range request with other bytes.
	ErrNoRange = remote.ErrNoRange
	// ErrNoMove: the web server cannot rename (no WebDAV MOVE), so an
	// upload cannot be made atomic.
	ErrNoMove = errors.New("objstore: server does not support WebDAV MOVE")
)

// IsURL reports whether s names a remote location (s3://, http://,
// https://) rather than a local path.
func IsURL(s string) bool {
	for _, p := range []string{"s3://", "http://", "https://"} {
		if len(s) > len(p) && strings.EqualFold(s[:len(p)], p) {
			return true
		}
	}
	return false
}

// ParseS3URL splits s3://BUCKET/KEY.
func ParseS3URL(s string) (bucket, key string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("objstore: %q: %w", s, err)
	}
	if !strings.EqualFold(u.Scheme, "s3") {
		return "", "", fmt.Errorf("objstore: %q is not an s3:// URL", s)
	}
	key = strings.TrimPrefix(u.Path, "/")
	if u.Host == "" || key == "" || strings.HasSuffix(key, "/") {
		return "", "", fmt.Errorf("objstore: %q: want s3://BUCKET/KEY (a key, not a folder)", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("objstore: %q: an s3:// URL has no query or fragment", s)
	}
	return u.Host, key, nil
}

// S3Options configure NewS3. The zero value takes everything from the
// standard AWS environment and configuration files.
type S3Options struct {
	// Endpoint, if set, is used instead of AWS_ENDPOINT_URL(_S3) and the
	// profile's endpoint_url.
	Endpoint string
	// Region, if set, is used instead of AWS_REGION and the profile's.
	// Without either, us-east-1 (what S3-compatible servers expect).
	Region string
	// AccessKey and SecretKey, if set, are used instead of the credential
	// chain (tests).
	AccessKey, SecretKey string
	// HTTPClient, if set, carries the requests. An
	// *awshttp.BuildableClient keeps AWS_CA_BUNDLE working (the SDK adds
	// the bundle to it); another client must trust the server itself.
	HTTPClient aws.HTTPClient
	// NoRetry sends each request once: the caller retries (a
	// remote.File does, with its own backoff).
	NoRetry bool
}

// S3 is a client of one S3 service. It is safe for concurrent use.
type S3 struct {
	c *s3.Client
}

// NewS3 configures a client from the standard AWS environment: credentials
// from the environment, the shared files (AWS_PROFILE), SSO or the
// instance role; region and endpoint from AWS_REGION and
// AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL or the profile. It makes no request.
func NewS3(ctx context.Context, opt S3Options) (*S3, error) {
	var lo []func(*config.LoadOptions) error
	if opt.Region != "" {
		lo = append(lo, config.WithRegion(opt.Region))
	}
	if opt.AccessKey != "" {
		lo = append(lo, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(opt.AccessKey, opt.SecretKey, "")))
	}
	if opt.HTTPClient != nil {
		lo = append(lo, config.WithHTTPClient(opt.HTTPClient))
	}
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("objstore: AWS configuration: %w", err)
	}
	// The SDK's default logger prints debug lines on stderr; a library
	// never logs globally.
	cfg.Logger = logging.Nop{}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// Newer SDKs add CRC trailers (aws-chunked bodies) to every upload by
	// default, which many S3-compatible servers reject, and check
	// whole-object checksums that some of them keep stale. Parts are
	// signed with their SHA-256 anyway and dimg checks every chunk it
	// reads, so use checksums only where the API requires them, unless the
	// user chose otherwise in the environment.
	if os.Getenv("AWS_REQUEST_CHECKSUM_CALCULATION") == "" {
		cfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	}
	if os.Getenv("AWS_RESPONSE_CHECKSUM_VALIDATION") == "" {
		cfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opt.Endpoint != "" {
			o.BaseEndpoint = aws.String(opt.Endpoint)
		}
		// A custom endpoint is MinIO, Ceph RGW, SeaweedFS or the like:
		// bucket names in the path work there without wildcard DNS.
		if o.BaseEndpoint != nil {
			o.UsePathStyle = true
		}
		switch {
		case opt.NoRetry:
			o.RetryMaxAttempts = 1
		case o.RetryMaxAttempts == 0:
			o.RetryMaxAttempts = 5
		}
	})
	return &S3{c: c}, nil
}

// Client is the SDK client, for callers (tests) that need another call.
func (s *S3) Client() *s3.Client { return s.c }

// s3Error turns an SDK error into one naming the object and wrapping one
// of the package's sentinels where one applies.
func s3Error(op, bucket, key string, err error) error {
	if err == nil {
		return nil
	}
	where := "s3://" + bucket
	if key != "" {
		where += "/" + key
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %s: %w", where, op, err)
	}
	code, msg := "", ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg = ae.ErrorCode(), ae.ErrorMessage()
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	detail := code
	if msg != "" {
		detail += ": " + msg
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%s: %s: no such bucket %q: %w", where, op, bucket, ErrNotFound)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%s: %s: %w (or no such bucket)", where, op, ErrNotFound)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" ||
		code == "InvalidToken" || code == "AccessDenied" || code == "Forbidden" || status == http.StatusForbidden:
		if detail == "" {
			detail = "403 Forbidden"
		}
		return fmt.Errorf("%s: %s: %w (%s); check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's permissions",
			where, op, ErrAccess, detail)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %s: %w (it was replaced since it was opened)", where, op, ErrChanged)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || status == http.StatusMovedPermanently:
		return remote.Permanent(fmt.Errorf("%s: %s: the bucket is in another region (%s); set AWS_REGION: %w", where, op, detail, err))
	}
	if strings.Contains(err.Error(), "failed to retrieve credentials") {
		return fmt.Errorf("%s: %s: %w: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): %w", where, op, ErrAccess, err)
	}
	return fmt.Errorf("%s: %s: %w", where, op, err)
}
