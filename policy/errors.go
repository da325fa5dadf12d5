package policy

import (
	"errors"
	"fmt"
)

// Errors. Every error Parse and Canonical return matches ErrInvalidPolicy
// (errors.Is); the problems it lists are *FieldError values (errors.As on
// the joined error finds the first).
var (
	// ErrInvalidPolicy is a policy document or rule that cannot be
	// applied: bad syntax, an unknown field, a bad value.
	ErrInvalidPolicy = errors.New("invalid policy")
	// ErrMissingCIDRIdentity is a CIDR named by a rule for which
	// Input.CIDRs has no identity.
	ErrMissingCIDRIdentity = errors.New("CIDR without identity")
	// ErrInvalidIdentity is an identity in Input outside the range its
	// map allows.
	ErrInvalidIdentity = errors.New("identity out of range")
)

// maxReportedErrors bounds how many problems one error lists.
const maxReportedErrors = 50

// FieldError is one problem in a policy document, at Path: "[0].ingress[1]
// .toPorts[0].ports[0].port" for the first rule of an array, or the same
// without the leading "[0]" when the document is a single rule object.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Is reports ErrInvalidPolicy.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidPolicy }

// joinErrors joins the first maxReportedErrors errors, and says how many
// more there were.
func joinErrors(errs []error) error {
	if len(errs) > maxReportedErrors {
		more := len(errs) - maxReportedErrors
		errs = append(errs[:maxReportedErrors:maxReportedErrors],
			&FieldError{Msg: fmt.Sprintf("and %d more problems", more)})
	}
	return errors.Join(errs...)
}

// syntaxError is a document that is not well-formed JSON or YAML.
func syntaxError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPolicy, fmt.Sprintf(format, args...))
}
