// Package ciliumkvstore only pins Cilium's kvstore tests (github.com/cilium/cilium/pkg/kvstore
// and the packages built on it) in this module's go.mod and go.sum;
// tests/compat/thirdparty/test_cilium_kvstore.py builds and runs them.
//
// go.sum also holds the sums of what those packages' tests import, which `go mod tidy`
// drops (tests of dependencies): after changing the version, add them again with
// `GOFLAGS=-mod=mod go list -test -deps github.com/cilium/cilium/<package>` for each
// package the harness runs.
package ciliumkvstore

import (
	_ "github.com/cilium/cilium/pkg/kvstore"
)
