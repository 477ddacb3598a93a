// etcdctl of the pinned etcd version (the e2e tests drive the servers through it): v3 by
// default, v2 with ETCDCTL_API=2 (etcd 3.5's etcdctl does the same; the v2 e2e tests set it).
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/etcdctl/v3/ctlv2"
	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
)

func main() {
	api := os.Getenv("ETCDCTL_API")
	os.Unsetenv("ETCDCTL_API")
	switch api {
	case "", "3":
		ctlv3.MustStart()
	case "2":
		ctlv2.MustStart()
	default:
		fmt.Fprintf(os.Stderr, "unsupported API version: %s\n", api)
		os.Exit(1)
	}
}
