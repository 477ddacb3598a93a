// Package etcde2e only pins etcd's e2e test package (go.etcd.io/etcd/tests/v3/e2e) in this
// module's go.mod and go.sum; tests/compat/thirdparty/test_etcd_e2e.py runs it.
package etcde2e

import _ "go.etcd.io/etcd/tests/v3/e2e"
