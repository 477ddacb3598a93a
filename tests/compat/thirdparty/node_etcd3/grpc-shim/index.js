'use strict';
// etcd3 0.2.13 requires the native `grpc` package, which does not build on current Node.js;
// this package takes its name and exports @grpc/grpc-js, which has the same API for what etcd3
// uses (loadPackageDefinition, credentials, Metadata, closeClient), with one difference:
// etcd3 calls every unary method as method(request, metadata, options, callback) with
// `options` undefined when the caller gave none. The native package took that; grpc-js
// throws "Incorrect arguments passed". Undefined options become {} here, nothing else changes.
const grpc = require('@grpc/grpc-js');

const checkArguments = grpc.Client.prototype.checkOptionalUnaryResponseArguments;
grpc.Client.prototype.checkOptionalUnaryResponseArguments = function (metadata, options, callback) {
  return checkArguments.call(this, metadata, options === undefined ? {} : options, callback);
};

module.exports = grpc;
