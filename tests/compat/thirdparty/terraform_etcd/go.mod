module petcd.dev/tests/terraformetcd

go 1.26.8

require github.com/hashicorp/terraform v1.2.9
