module petcd.dev/tests/terraformetcdv3

go 1.26.8

require github.com/hashicorp/terraform v1.2.9
