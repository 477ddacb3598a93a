// Package corednsetcd only pins CoreDNS's etcd plugin tests (github.com/coredns/coredns/plugin/etcd,
// build tag etcd) in this module's go.mod and go.sum; tests/compat/thirdparty/test_coredns_etcd.py
// builds and runs them.
//
// go.sum also holds the sums of what that package's tests import, which `go mod tidy` drops
// (tests of dependencies): after changing the version, add them again with
// `GOFLAGS=-mod=mod go list -tags etcd -test -deps github.com/coredns/coredns/plugin/etcd`.
package corednsetcd

import (
	_ "github.com/coredns/coredns/plugin/etcd"
)
