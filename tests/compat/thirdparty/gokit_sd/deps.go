// Package gokitsd only pins Go kit's etcd service-discovery packages and their integration tests
// (github.com/go-kit/kit/sd/etcd, sd/etcdv3, build tag flaky_integration) in this module's go.mod
// and go.sum; tests/compat/thirdparty/test_gokit_sd.py builds and runs them.
//
// go.sum also holds the sums of what those packages' tests import, which `go mod tidy` drops
// (tests of dependencies): after changing the version, add them again with
// `GOFLAGS=-mod=mod go list -tags flaky_integration -test -deps github.com/go-kit/kit/sd/...`.
package gokitsd

import (
	_ "github.com/go-kit/kit/sd/etcd"
	_ "github.com/go-kit/kit/sd/etcdv3"
)
