"""petcd.proxy: ``petcd grpc-proxy start``, etcd's L7 gRPC proxy (see docs/grpc-proxy.md).

A client of the cluster (it never imports the member): ``flags`` (the command line),
``upstream`` (channels to the endpoints, failover, auto sync), ``service`` (every v3 method
forwarded), ``namespace`` (``--namespace``), ``register`` (``--resolver-prefix``), ``http``
(``--metrics-addr``), ``main`` (the program).
"""

from petcd.proxy.main import main

__all__ = ["main"]
