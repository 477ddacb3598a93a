// etcdctl of the pinned etcd version (the framework drives some member operations with it).
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
