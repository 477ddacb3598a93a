// Package vaultetcd only pins Vault's etcd storage backend tests
// (github.com/hashicorp/vault/physical/etcd) in this module's go.mod and go.sum;
// tests/compat/thirdparty/test_vault_etcd.py builds and runs them.
//
// go.sum also holds the sums of what that package's tests import, which `go mod tidy`
// drops (tests of dependencies): after changing the version, add them again with
// `GOFLAGS=-mod=mod go list -test -deps github.com/hashicorp/vault/physical/etcd`.
package vaultetcd

import (
	_ "github.com/hashicorp/vault/physical/etcd"
)
