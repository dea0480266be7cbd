package k8sconv

import (
	"errors"
	"fmt"
	"strconv"
)

// FieldError is a conversion error at a field path such as
// "spec.containers[0].ports[0].containerPort".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// ErrRequired is wrapped by errors for missing required fields.
var ErrRequired = errors.New("required value")

func required(field string) error {
	return &FieldError{Field: field, Err: ErrRequired}
}

// path builds field paths without fmt on the happy path.
func idx(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

// portNumber validates a port number field that must be 1-65535.
func portNumber(field string, v int32) (uint16, error) {
	if v < 1 || v > 65535 {
		return 0, fieldErrorf(field, "%d is out of range 1-65535", v)
	}
	return uint16(v), nil
}
