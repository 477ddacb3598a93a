// Package daprstate only pins Dapr's state store conformance tests
// (github.com/dapr/components-contrib/tests/conformance, build tag conftests) in this module's
// go.mod and go.sum; tests/compat/thirdparty/test_dapr_state.py builds and runs them.
//
// go.mod repeats components-contrib's own replace directives, which do not apply to it as a
// dependency. go.sum also holds the sums of what the tests import, which `go mod tidy` drops:
// after changing the version, add them again with `GOFLAGS=-mod=mod go list -tags conftests
// -test -deps github.com/dapr/components-contrib/tests/conformance`.
package daprstate

import (
	_ "github.com/dapr/components-contrib/state/etcd"
)
